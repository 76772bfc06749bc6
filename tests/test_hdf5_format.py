"""The trajectory file: round trip, validation errors that name the file, non-finite values refused, atomic writes."""

import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from promptdiff.data.hdf5_format import (
    DatasetError,
    Trajectory,
    TrajectoryWriter,
    content_digest,
    dataset_path,
    open_trajectories,
    partial_path,
)


def make_traj(task, T=6, obs_dim=2, act_dim=2, seed=0, terminated=False):
    rng = np.random.default_rng(seed)
    term = np.zeros(T, bool)
    trunc = np.zeros(T, bool)
    (term if terminated else trunc)[-1] = True
    return Trajectory(
        observations=rng.normal(size=(T + 1, obs_dim)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(T, act_dim)).astype(np.float32),
        rewards=rng.normal(size=T).astype(np.float32),
        terminations=term,
        truncations=trunc,
        task_id=task,
        successes=np.arange(T) >= T - 2,
    )


def write(path, trajs, family="point_robot", obs_dim=2, act_dim=2, role="train"):
    with TrajectoryWriter(path, family=family, obs_dim=obs_dim, act_dim=act_dim, role=role,
                          quality="expert", expert="test", seed=3, config={"k": 1}) as w:
        for t in trajs:
            w.add(t, task_param=[0.1 * t.task_id], split="train")
    return path


def test_round_trip_preserves_arrays_attributes_and_task_stats(tmp_path):
    trajs = [make_traj(0, seed=1), make_traj(0, T=4, seed=2, terminated=True), make_traj(5, seed=3)]
    path = write(tmp_path / "f.h5", trajs)
    with open_trajectories(path, family="point_robot", obs_dim=2, role="train") as f:
        assert f.tasks == [0, 5] and f.num_episodes == 3
        got = f.by_task()
        assert [len(t) for t in got[0]] == [6, 4]
        np.testing.assert_array_equal(got[0][1].observations, trajs[1].observations)
        np.testing.assert_array_equal(got[0][1].terminations, trajs[1].terminations)
        np.testing.assert_array_equal(got[5][0].actions, trajs[2].actions)
        stats = f.task_stats
        rets = [trajs[0].episode_return, trajs[1].episode_return]
        assert stats[0]["return_mean"] == pytest.approx(np.mean(rets), rel=1e-5)
        assert stats[0]["return_std"] == pytest.approx(np.std(rets), rel=1e-5)
        assert stats[5]["num_episodes"] == 1 and stats[5]["success_rate"] == 1.0
        assert f.attrs["seed"] == 3 and f.attrs["schema_version"] == 1
        assert "numpy" in f.attrs["package_versions"]
        np.testing.assert_allclose(f.task_params()[5], [0.5])


def test_content_digest_follows_the_data_not_the_file(tmp_path):
    """Two writes of the same trajectories by other settings (other file attributes, other bytes on disk) have
    one digest; one changed action, a changed episode attribute or one episode less changes it."""
    trajs = [make_traj(0, seed=1), make_traj(3, seed=2)]
    a = write(tmp_path / "a.h5", trajs)
    with TrajectoryWriter(tmp_path / "b.h5", family="point_robot", obs_dim=2, act_dim=2, role="train",
                          quality="expert", expert="elsewhere", seed=9, config={"root": "/other/place"}) as w:  # fmt: skip
        for t in trajs:
            w.add(t, task_param=[0.1 * t.task_id], split="train")
    b = tmp_path / "b.h5"
    assert a.read_bytes() != b.read_bytes() and content_digest(a) == content_digest(b)
    assert len(content_digest(a)) == 16

    nudged = make_traj(3, seed=2)
    nudged.actions[2, 1] = np.nextafter(nudged.actions[2, 1], np.float32(2))  # one last-bit change
    other_param = tmp_path / "c.h5"
    with TrajectoryWriter(other_param, family="point_robot", obs_dim=2, act_dim=2, role="train",
                          quality="expert", expert="test", seed=3, config={"k": 1}) as w:  # fmt: skip
        for t in trajs:
            w.add(t, task_param=[0.2 * t.task_id], split="train")
    digests = {content_digest(p) for p in (a, write(tmp_path / "d.h5", [trajs[0], nudged]), other_param,
                                           write(tmp_path / "e.h5", trajs[:1]))}  # fmt: skip
    assert len(digests) == 4

    first = content_digest(a)  # cached per (file, size, modification time): a rewritten file is read again
    write(a, [trajs[0], nudged])
    assert content_digest(a) != first


def test_writer_rejects_bad_shapes_and_leaves_nothing(tmp_path):
    bad = make_traj(0)
    bad.actions = bad.actions[:, :1]
    path = tmp_path / "f.h5"
    with pytest.raises(ValueError, match="actions has shape"):
        write(path, [make_traj(1), bad])
    assert not path.exists() and not partial_path(path).exists()


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "nope.h5"
    with pytest.raises(DatasetError, match="nope.h5: file not found"):
        open_trajectories(path)


def test_partial_leftover_is_mentioned(tmp_path):
    path = tmp_path / "f.h5"
    partial_path(path).write_bytes(b"half")
    with pytest.raises(DatasetError, match="interrupted write"):
        open_trajectories(path)


@pytest.mark.parametrize(
    "kind, pattern",
    [("truncated", "truncated"), ("garbage", "not a readable HDF5 file"), ("empty", "not a readable HDF5 file")],
)
def test_corrupt_files_give_one_clear_error(tmp_path, kind, pattern):
    good = write(tmp_path / "good.h5", [make_traj(0), make_traj(1)])
    data = good.read_bytes()
    bad = tmp_path / f"{kind}.h5"
    bad.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x00junk" * 100, "empty": b""}[kind])
    with pytest.raises(DatasetError) as info:
        open_trajectories(bad)
    assert str(bad) in str(info.value) and pattern in str(info.value)


def test_foreign_hdf5_file(tmp_path):
    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("observations", data=np.zeros((3, 2)))
    with pytest.raises(DatasetError, match="foreign.h5: not a promptdiff trajectory file"):
        open_trajectories(path)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [({"family": "ant_dir"}, "family is 'point_robot', expected 'ant_dir'"),
     ({"obs_dim": 27}, "obs_dim is 2, expected 27"),
     ({"role": "prompt"}, "role is 'train', expected 'prompt'")],
)
def test_mismatched_file(tmp_path, kwargs, pattern):
    path = write(tmp_path / "f.h5", [make_traj(0)])
    with pytest.raises(DatasetError, match=pattern):
        open_trajectories(path, **kwargs)


def test_damaged_episode_is_reported(tmp_path):
    path = write(tmp_path / "f.h5", [make_traj(0), make_traj(1)])
    with h5py.File(path, "a") as f:
        del f["episode_1/rewards"]
    with pytest.raises(DatasetError, match="episode_1/rewards is missing"):
        open_trajectories(path)
    with h5py.File(path, "a") as f:
        f.attrs["num_episodes"] = 5
    with pytest.raises(DatasetError, match="episode_1/rewards is missing|episode_2 is missing"):
        open_trajectories(path)


def test_incomplete_flag_is_required(tmp_path):
    path = write(tmp_path / "f.h5", [make_traj(0)])
    with h5py.File(path, "a") as f:
        del f.attrs["complete"]
    with pytest.raises(DatasetError, match="incomplete file"):
        open_trajectories(path)


def test_exception_inside_writer_removes_partial(tmp_path):
    path = tmp_path / "f.h5"
    with pytest.raises(RuntimeError):
        with TrajectoryWriter(path, family="point_robot", obs_dim=2, act_dim=2, role="train",
                              quality="expert", expert="t", seed=0) as w:
            w.add(make_traj(0), task_param=[0.0], split="train")
            raise RuntimeError("boom")
    assert not path.exists() and not partial_path(path).exists()


def test_killed_writer_leaves_no_complete_looking_file(tmp_path):
    """A process killed mid-write (SIGKILL, no cleanup) leaves only a .partial file."""
    path = tmp_path / "f.h5"
    script = textwrap.dedent(f"""
        import os, signal, numpy as np
        from promptdiff.data.hdf5_format import Trajectory, TrajectoryWriter
        T = 5
        traj = Trajectory(np.zeros((T + 1, 2)), np.zeros((T, 2)), np.zeros(T), np.zeros(T, bool),
                          np.ones(T, bool), 0)
        with TrajectoryWriter({str(path)!r}, family="point_robot", obs_dim=2, act_dim=2, role="train",
                              quality="expert", expert="t", seed=0) as w:
            for _ in range(3):
                w.add(traj, task_param=[0.0], split="train")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9
    assert not path.exists() and partial_path(path).exists()
    with pytest.raises(DatasetError, match="interrupted write"):
        open_trajectories(path)


def test_dataset_path_layout(tmp_path):
    assert dataset_path("ant_dir", "prompt", "expert", tmp_path) == tmp_path / "ant_dir" / "prompt-expert.h5"
    with pytest.raises(ValueError):
        dataset_path("ant_dir", "eval")


@pytest.mark.parametrize("field, index, value, where", [
    ("rewards", (3,), np.nan, "nan at step 3"),
    ("actions", (2, 1), -np.inf, "-inf at step 2, column 1"),
    ("observations", (6, 0), np.inf, "inf at step 6, column 0"),
])  # fmt: skip
def test_reading_refuses_non_finite_values_naming_file_episode_and_field(tmp_path, field, index, value, where):
    path = write(tmp_path / "f.h5", [make_traj(0, seed=1), make_traj(1, seed=2), make_traj(1, seed=3)])
    with h5py.File(path, "a") as f:
        f[f"episode_2/{field}"][index] = value
    with open_trajectories(path) as f:
        f.episode(1)  # the clean episodes stay readable
        with pytest.raises(DatasetError) as info:
            f.by_task()
    assert str(info.value) == f"{path}: episode_2/{field} holds {where}"


def test_data_loading_refuses_a_file_with_nan_in_one_episode(tmp_path):
    """What pre-training and few-shot data modules load through: a NaN never reaches a batch."""
    from promptdiff.data.segments import load_family_data

    path = dataset_path("point_robot", "train", root=tmp_path)
    path.parent.mkdir(parents=True)
    write(path, [make_traj(0, seed=1), make_traj(1, seed=2)])
    assert load_family_data("point_robot", tmp_path, tasks=[0, 1], roles=("train",))[0].keys() == {0, 1}
    with h5py.File(path, "a") as f:
        f["episode_1/observations"][4, 1] = np.nan
    with pytest.raises(DatasetError) as info:
        load_family_data("point_robot", tmp_path, tasks=[0, 1], roles=("train",))
    assert str(info.value) == f"{path}: episode_1/observations holds nan at step 4, column 1"


def test_writer_refuses_non_finite_values_and_empty_files(tmp_path):
    bad = make_traj(0)
    bad.rewards[1] = np.nan
    path = tmp_path / "f.h5"
    with pytest.raises(ValueError, match="episode 1: rewards holds nan at step 1"):
        write(path, [make_traj(1), bad])
    assert not path.exists() and not partial_path(path).exists()
    with pytest.raises(ValueError, match="no episodes were added"):
        write(path, [])
    assert not path.exists() and not partial_path(path).exists()


@pytest.mark.parametrize("corrupt, pattern", [
    pytest.param(lambda f: f["episode_0"].attrs.__setitem__("task_id", "zero"),
                 "episode_0 attribute 'task_id' is 'zero'", id="string task_id"),
    pytest.param(lambda f: f.attrs.__setitem__("num_episodes", -1), "'num_episodes' is -1", id="negative count"),
    pytest.param(lambda f: f.attrs.__setitem__("num_episodes", 0), "num_episodes is 0: the file holds no episodes",
                 id="zero count"),
    pytest.param(lambda f: f.attrs.__setitem__("obs_dim", "2"), "'obs_dim' is '2'", id="string obs_dim"),
    pytest.param(lambda f: f.__delitem__("task_stats/success_rate"), "task_stats/success_rate is missing",
                 id="missing stats column"),
    pytest.param(lambda f: f.__delitem__("episode_1"), "episode_1 is missing", id="missing episode"),
])  # fmt: skip
def test_malformed_structure_is_refused_at_open_naming_the_file(tmp_path, corrupt, pattern):
    path = write(tmp_path / "f.h5", [make_traj(0), make_traj(1)])
    with h5py.File(path, "a") as f:
        corrupt(f)
    with pytest.raises(DatasetError) as info:
        open_trajectories(path)
    assert str(info.value).startswith(f"{path}: ") and pattern in str(info.value)
