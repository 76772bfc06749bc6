"""`promptdiff data info` (`summarise`): statistics recomputed from the episodes, and every contradiction refused.

Each broken file is a real file written by `TrajectoryWriter` and then damaged with h5py, the way a hand-edited
or foreign-written file would be.
"""

import json

import h5py
import numpy as np
import pytest

from promptdiff.cli.main import main
from promptdiff.data.hdf5_format import DatasetError, Trajectory, TrajectoryWriter, summarise


def episode(task, T, seed, successes=True):
    """An episode of T steps; with success flags, it succeeds (at its last step) when the seed is even."""
    rng = np.random.default_rng(seed)
    trunc = np.zeros(T, bool)
    trunc[-1] = True
    flags = (np.arange(T) == T - 1) & (seed % 2 == 0)
    return Trajectory(
        observations=rng.normal(size=(T + 1, 2)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(T, 2)).astype(np.float32),
        rewards=rng.normal(size=T).astype(np.float32),
        terminations=np.zeros(T, bool),
        truncations=trunc,
        task_id=task,
        successes=flags if successes else None,
    )


EPISODES = [episode(0, 6, 0), episode(0, 4, 1), episode(0, 5, 2), episode(5, 3, 3)]


def write(path, trajs=EPISODES, family="point_robot"):
    with TrajectoryWriter(path, family=family, obs_dim=2, act_dim=2, role="train", quality="expert",
                          expert="test", seed=0) as w:  # fmt: skip
        for t in trajs:
            w.add(t, task_param=[0.1 * t.task_id], split="train")
    return path


def test_statistics_are_recomputed_from_the_episodes(tmp_path):
    path = write(tmp_path / "f.h5")
    info = summarise(path)
    assert (info["family"], info["role"], info["episodes"], info["steps"]) == ("point_robot", "train", 4, 18)
    returns = [float(np.sum(t.rewards, dtype=np.float64)) for t in EPISODES[:3]]
    task0 = info["tasks"][0]
    assert task0["num_episodes"] == 3
    assert task0["return_mean"] == pytest.approx(np.mean(returns), rel=1e-12)
    assert task0["return_std"] == pytest.approx(np.std(returns), rel=1e-12)
    assert (task0["return_min"], task0["return_max"]) == pytest.approx((min(returns), max(returns)), rel=1e-12)
    assert task0["length_mean"] == pytest.approx(5.0)
    assert task0["success_rate"] == pytest.approx(2 / 3)  # episodes 0 and 2 succeed
    assert info["tasks"][5]["num_episodes"] == 1 and info["tasks"][5]["return_std"] == 0.0
    json.dumps(info, allow_nan=False)


def test_stored_statistics_are_not_what_is_reported(tmp_path):
    """A file whose stored task_stats were edited is refused, not echoed."""
    path = write(tmp_path / "f.h5")
    with h5py.File(path, "a") as f:
        f["task_stats/return_mean"][0] = 1234.5
    with pytest.raises(DatasetError) as info:
        summarise(path)
    assert str(path) in str(info.value) and "task_stats/return_mean of task 0 is 1234.5" in str(info.value)


def _set(name, value):
    """Set an attribute: "num_episodes" of the file, "episode_2.task_id" of a group."""
    def corrupt(f):
        group, _, key = name.rpartition(".")
        (f[group] if group else f).attrs[key] = value
    return corrupt


def _poke(dataset, index, value):
    def corrupt(f):
        f[dataset][index] = value
    return corrupt


def _delete(name):
    def corrupt(f):
        del f[name]
    return corrupt


BROKEN = {
    "nan reward": (_poke("episode_1/rewards", 2, np.nan), "episode_1/rewards holds nan at step 2"),
    "inf observation": (_poke("episode_3/observations", (1, 0), np.inf), "episode_3/observations holds inf at step 1"),
    "negative num_episodes": (_set("num_episodes", -4), "'num_episodes' is -4"),
    "zero num_episodes": (_set("num_episodes", 0), "num_episodes is 0"),
    "fewer num_episodes than groups": (_set("num_episodes", 3), "num_episodes is 3 but the file holds 4"),
    "family of other sizes": (_set("family", "ant_dir"), "'obs_dim' is 2, but family 'ant_dir' has obs_dim 27"),
    "unknown family": (_set("family", "no_such_family"), "'family': unknown task family 'no_such_family'"),
    "string task_id": (_set("episode_2.task_id", "zero"), "episode_2 attribute 'task_id' is 'zero'"),
    "float task_id": (_set("episode_2.task_id", 0.5), "episode_2 attribute 'task_id' is 0.5"),
    "task outside the family": (_set("episode_3.task_id", 99),
                                "'task_id' is 99, but family 'point_robot' has tasks 0..39"),
    "wrong length attribute": (_set("episode_0.length", 60), "episode_0 attribute 'length' is 60"),
    "wrong episode_return": (_set("episode_1.episode_return", 99.0), "episode_1 attribute 'episode_return' is 99.0"),
    "missing task_stats column": (_delete("task_stats/return_std"), "task_stats/return_std is missing"),
    "missing task_stats": (_delete("task_stats"), "group 'task_stats' is missing"),
    "stored episode count": (_poke("task_stats/num_episodes", 1, 7), "task_stats/num_episodes of task 5 is 7"),
    "stored task ids": (_poke("task_stats/task_ids", 1, 6), "task_stats/task_ids is [0, 6]"),
    "stored success rate": (_poke("task_stats/success_rate", 0, 1.0), "task_stats/success_rate of task 0 is 1.0"),
    "stored return std": (_poke("task_stats/return_std", 1, 3.0), "task_stats/return_std of task 5 is 3.0"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_file_is_refused_naming_file_and_field(tmp_path, case):
    corrupt, expected = BROKEN[case]
    path = write(tmp_path / "broken.h5")
    with h5py.File(path, "a") as f:
        corrupt(f)
    with pytest.raises(DatasetError) as info:
        summarise(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert expected in message


def test_cli_prints_strict_json_for_a_file_without_success_flags(tmp_path, capsys):
    path = write(tmp_path / "f.h5", [episode(2, 5, s, successes=False) for s in range(3)])
    assert main(["data", "info", str(path)]) == 0

    def refuse(constant):
        raise AssertionError(f"not JSON: {constant}")

    info = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert info["tasks"]["2"]["success_rate"] is None and info["tasks"]["2"]["num_episodes"] == 3


def test_cli_refuses_a_file_with_nan_in_one_line(tmp_path, capsys):
    path = write(tmp_path / "f.h5")
    with h5py.File(path, "a") as f:
        f["episode_2/actions"][3, 1] = np.nan
    assert main(["data", "info", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(path) in err and "episode_2/actions holds nan at step 3, column 1" in err
