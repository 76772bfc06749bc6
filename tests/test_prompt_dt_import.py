"""Importing Prompt-DT's pickles: restricted unpickling, conversion, validation, no partial output."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from promptdiff.data.hdf5_format import DatasetError, dataset_path, open_trajectories
from promptdiff.production.prompt_dt_import import (
    UnsafePickleError,
    default_env_prefix,
    import_prompt_dt,
    safe_load_pickle,
)
from promptdiff.envs.families import get_family

FAMILY = "cheetah_vel"  # obs 20, act 6; tasks 2, 7, 15, 23, 26 are test tasks
OBS, ACT = 20, 6
TASKS = (0, 2, 5)


def make_traj(rng, T, *, obs_dim=OBS, act_dim=ACT, done_key="terminals", flat_rewards=False,
              terminal_at_end=False):  # fmt: skip
    """One trajectory dict laid out the way Prompt-DT's pickles are."""
    obs = rng.standard_normal((T + 1, obs_dim)).astype(np.float32)
    done = np.zeros((T, 1), dtype=bool)
    done[-1] = terminal_at_end
    rewards = rng.standard_normal((T,) if flat_rewards else (T, 1)).astype(np.float32)
    return {
        "observations": obs[:-1],
        "next_observations": obs[1:],
        "actions": rng.uniform(-1, 1, (T, act_dim)).astype(np.float32),
        "rewards": rewards,
        done_key: done,
    }


def write_pickle(path: Path, obj, protocol=pickle.HIGHEST_PROTOCOL) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.fixture
def source(tmp_path):
    """A Prompt-DT style directory: tasks 0, 2, 5; 3 training and 2 prompt trajectories each.

    Task 2's training file says `dones` instead of `terminals`; task 5's rewards are flat (T,);
    the last training trajectory of task 0 terminates.
    """
    rng = np.random.default_rng(0)
    src = tmp_path / "prompt_dt"
    src.mkdir()
    data = {}
    for task in TASKS:
        train = [make_traj(rng, T, done_key="dones" if task == 2 else "terminals",
                           flat_rewards=task == 5, terminal_at_end=(task == 0 and T == 6))
                 for T in (4, 5, 6)]  # fmt: skip
        prompt = [make_traj(rng, T) for T in (3, 4)]
        write_pickle(src / f"cheetah_vel-{task}-expert.pkl", train)
        write_pickle(src / f"cheetah_vel-{task}-prompt-expert.pkl", prompt, protocol=2)
        data[task] = {"train": train, "prompt": prompt}
    return src, data


def h5_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in (".h5", ".partial"))


# -- conversion ---------------------------------------------------------------------------------


def test_import_writes_train_and_prompt_files(source, tmp_path):
    src, data = source
    out_root = tmp_path / "datasets"
    paths = import_prompt_dt(src, FAMILY, out_root=out_root)
    assert paths == [dataset_path(FAMILY, "train", "expert", out_root),
                     dataset_path(FAMILY, "prompt", "expert", out_root)]  # fmt: skip
    assert h5_files(out_root) == sorted(paths)  # no leftover .partial files
    family = get_family(FAMILY)

    for role, path, per_task in (("train", paths[0], 3), ("prompt", paths[1], 2)):
        with open_trajectories(path, family=FAMILY, obs_dim=OBS, act_dim=ACT, role=role) as f:
            assert f.quality == "expert"
            assert f.attrs["expert"] == "prompt-dt import"
            assert f.attrs["seed"] == 0
            config = json.loads(f.attrs["collection_config"])
            assert config == {"source": str(src), "env_prefix": "cheetah_vel", "tasks": list(TASKS)}
            assert f.num_episodes == per_task * len(TASKS)
            assert f.tasks == list(TASKS)
            for task, params in f.task_params().items():
                np.testing.assert_allclose(params, [0.075 * (task + 1)])
            for task, trajs in f.by_task().items():
                originals = data[task][role]
                assert len(trajs) == len(originals) == per_task
                for got, raw in zip(trajs, originals):
                    T = len(raw["actions"])
                    assert len(got) == T and got.task_id == task
                    want_obs = np.concatenate([raw["observations"], raw["next_observations"][-1:]])
                    np.testing.assert_array_equal(got.observations, want_obs)
                    np.testing.assert_array_equal(got.actions, raw["actions"])
                    np.testing.assert_array_equal(got.rewards, raw["rewards"].reshape(T))
                    done = raw.get("terminals", raw.get("dones")).reshape(T)
                    np.testing.assert_array_equal(got.terminations, done)
                    # only a trajectory that did not terminate ends in a truncation
                    assert not got.truncations[:-1].any()
                    assert got.truncations[-1] == (not done[-1])
        with h5py.File(path, "r") as h:
            splits = {int(h[g].attrs["task_id"]): h[g].attrs["split"] for g in h if g.startswith("episode_")}
        assert splits == {t: family.split_of(t) for t in TASKS} == {0: "train", 2: "test", 5: "train"}


def test_explicit_tasks_and_env_prefix(tmp_path):
    rng = np.random.default_rng(1)
    src = tmp_path / "src"
    src.mkdir()
    for task in (1, 3):
        write_pickle(src / f"HalfCheetahVel-{task}-expert.pkl", [make_traj(rng, 3)])
        write_pickle(src / f"HalfCheetahVel-{task}-prompt-expert.pkl", [make_traj(rng, 2)])
    train, prompt = import_prompt_dt(src, FAMILY, out_root=tmp_path / "out",
                                     env_prefix="HalfCheetahVel", tasks=[3])  # fmt: skip
    with open_trajectories(train) as f:
        assert f.tasks == [3] and f.num_episodes == 1
        assert json.loads(f.attrs["collection_config"])["env_prefix"] == "HalfCheetahVel"
    with open_trajectories(prompt) as f:
        assert f.tasks == [3] and len(f.episode(0)) == 2


# -- restricted unpickling ------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_safe_load_pickle_rebuilds_numpy_structures(tmp_path, protocol):
    obj = [{"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([[True], [False]]),
            "s": np.float32(1.5), "i": np.int64(-3), "dt": np.dtype("float64"),
            "t": (1, 2.5, "x", None, b"raw"), "f": np.asfortranarray(np.ones((2, 2)))}]  # fmt: skip
    got = safe_load_pickle(write_pickle(tmp_path / "ok.pkl", obj, protocol))
    assert repr(got) == repr(obj)
    assert got[0]["a"].dtype == np.float32 and got[0]["f"].flags.f_contiguous


def test_safe_load_pickle_accepts_numpy1_module_names(tmp_path):
    # numpy 1.x pickles name numpy.core.multiarray; protocol 2 spells globals out as text
    blob = pickle.dumps([np.eye(2, dtype=np.float32), np.float32(2.0)], protocol=2)
    blob = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in blob
    path = tmp_path / "numpy1.pkl"
    path.write_bytes(blob)
    got = safe_load_pickle(path)
    np.testing.assert_array_equal(got[0], np.eye(2))
    assert got[1] == np.float32(2.0)


class ShellPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class ExecPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


class SomeClass:  # harmless, but not a plain structure: must still be refused
    def __init__(self, marker):
        self.marker = str(marker)


@pytest.mark.parametrize(
    "payload, forbidden",
    [(ShellPayload, f"'{os.system.__module__}.system'"), (ExecPayload, "'builtins.exec'"),
     (SomeClass, "SomeClass'")],
)  # fmt: skip
def test_malicious_pickle_is_refused(source, tmp_path, payload, forbidden):
    src, data = source
    marker = tmp_path / "marker"
    evil = src / "cheetah_vel-2-expert.pkl"  # a later file: earlier ones load fine
    write_pickle(evil, data[2]["train"] + [payload(marker)])
    out_root = tmp_path / "datasets"
    with pytest.raises(UnsafePickleError) as info:
        import_prompt_dt(src, FAMILY, out_root=out_root)
    message = str(info.value)
    assert str(evil) in message and forbidden in message and "refusing to load" in message
    assert isinstance(info.value, DatasetError) and info.value.path == evil
    assert not marker.exists()
    assert h5_files(tmp_path) == []


# -- invalid inputs -------------------------------------------------------------------------------


def assert_single_error(info, path: Path, *fragments: str) -> None:
    err = info.value
    assert type(err) is DatasetError
    assert err.path == path and str(path) in str(err)
    for fragment in fragments:
        assert fragment in str(err), (fragment, str(err))
    assert err.__cause__ is None  # no chained pickle traceback


def test_truncated_pickle(source, tmp_path):
    src, _ = source
    bad = src / "cheetah_vel-5-prompt-expert.pkl"
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    with pytest.raises(DatasetError) as info:
        import_prompt_dt(src, FAMILY, out_root=tmp_path / "datasets")
    assert_single_error(info, bad, "pickle")
    assert info.value.__suppress_context__
    assert h5_files(tmp_path) == []


@pytest.mark.parametrize("blob", [b"", b"\x00garbage bytes\xff", b"\x80\x05\x95\x10"])
def test_garbage_is_a_dataset_error(tmp_path, blob):
    path = tmp_path / "junk.pkl"
    path.write_bytes(blob)
    with pytest.raises(DatasetError) as info:
        safe_load_pickle(path)
    assert_single_error(info, path)


def test_wrong_observation_size_keeps_existing_output(source, tmp_path):
    src, data = source
    rng = np.random.default_rng(2)
    bad = src / "cheetah_vel-2-expert.pkl"
    write_pickle(bad, [data[2]["train"][0], make_traj(rng, 4, obs_dim=17)])
    out_root = tmp_path / "datasets"
    existing = dataset_path(FAMILY, "train", "expert", out_root)
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"previous file")
    with pytest.raises(DatasetError) as info:
        import_prompt_dt(src, FAMILY, out_root=out_root)
    expected = "trajectory 1: 'observations' has 17 columns, family cheetah_vel expects 20"
    assert_single_error(info, bad, expected)
    assert existing.read_bytes() == b"previous file"
    assert h5_files(tmp_path) == [existing]


def _drop_actions(traj):
    return {k: v for k, v in traj.items() if k != "actions"}


def _short_rewards(traj):
    return {**traj, "rewards": traj["rewards"][:-1]}


@pytest.mark.parametrize(
    "corrupt, fragments",
    [(_drop_actions, ["trajectory 0: key 'actions' is missing"]),
     (_short_rewards, ["trajectory 0: 'rewards' has shape (3, 1)"]),
     (lambda t: {**t, "actions": t["actions"][:, :5]}, ["'actions' has 5 columns", "expects 6"]),
     (lambda t: {**t, "next_observations": t["next_observations"][:-1]}, ["'next_observations' has 3 rows"])],
)  # fmt: skip
def test_malformed_trajectory(source, tmp_path, corrupt, fragments):
    src, data = source
    bad = src / "cheetah_vel-0-prompt-expert.pkl"
    raw = make_traj(np.random.default_rng(3), 4)
    write_pickle(bad, [corrupt(raw)])
    with pytest.raises(DatasetError) as info:
        import_prompt_dt(src, FAMILY, out_root=tmp_path / "datasets")
    assert_single_error(info, bad, *fragments)
    assert h5_files(tmp_path) == []


def test_top_level_must_be_a_list(source, tmp_path):
    src, data = source
    bad = write_pickle(src / "cheetah_vel-0-expert.pkl", {"observations": np.zeros((2, OBS))})
    with pytest.raises(DatasetError) as info:
        import_prompt_dt(src, FAMILY, out_root=tmp_path / "datasets")
    assert_single_error(info, bad, "top level is a dict, expected a list")


def test_no_matching_files(tmp_path):
    src = tmp_path / "empty"
    src.mkdir()
    (src / "cheetah_dir-0-expert.pkl").write_bytes(b"")  # another family's file is ignored
    with pytest.raises(DatasetError) as info:
        import_prompt_dt(src, FAMILY, out_root=tmp_path / "datasets")
    assert_single_error(info, src, "cheetah_vel-<task>-expert.pkl", "cheetah_vel-<task>-prompt-expert.pkl")
    missing = tmp_path / "does_not_exist"
    with pytest.raises(DatasetError) as info:
        import_prompt_dt(missing, FAMILY, out_root=tmp_path / "datasets")
    assert_single_error(info, missing, "not a directory")
    assert h5_files(tmp_path) == []


def test_task_without_prompt_file(source, tmp_path):
    src, _ = source
    gone = src / "cheetah_vel-5-prompt-expert.pkl"
    gone.unlink()
    with pytest.raises(DatasetError) as info:
        import_prompt_dt(src, FAMILY, out_root=tmp_path / "datasets")
    assert_single_error(info, gone, "file not found")
    assert h5_files(tmp_path) == []


def test_default_prefixes_and_shared_data_family(tmp_path):
    assert default_env_prefix(get_family("ml1_reach")) == "ML1-reach-v2"
    assert default_env_prefix(get_family("ml1_pick_place")) == "ML1-pick-place-v2"
    assert default_env_prefix(get_family("ant_dir_ood")) == "ant_dir"
    # ant_dir_ood shares ant_dir's data: it imports into ant_dir's files with ant_dir's split
    rng = np.random.default_rng(4)
    src = tmp_path / "src"
    src.mkdir()
    write_pickle(src / "ant_dir-6-expert.pkl", [make_traj(rng, 3, obs_dim=27, act_dim=8)])
    write_pickle(src / "ant_dir-6-prompt-expert.pkl", [make_traj(rng, 2, obs_dim=27, act_dim=8)])
    train, _ = import_prompt_dt(src, "ant_dir_ood", out_root=tmp_path / "out")
    assert train == dataset_path("ant_dir", "train", "expert", tmp_path / "out")
    with h5py.File(train, "r") as h:
        assert h.attrs["family"] == "ant_dir"
        assert h["episode_0"].attrs["split"] == get_family("ant_dir").split_of(6) == "test"
