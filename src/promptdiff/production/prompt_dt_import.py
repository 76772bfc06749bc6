"""Import the data files published with Prompt-DT into the promptdiff trajectory format.

Prompt-DT ships, for every task i of an environment, two pickles in one directory:

    <env>-<i>-expert.pkl          the expert training set of task i
    <env>-<i>-prompt-expert.pkl   the few-shot prompt pool of task i (5 trajectories)

Each pickle holds a list of dicts, one per trajectory of T steps, with the arrays
`observations` (T, obs), `next_observations` (T, obs), `actions` (T, act), `rewards` (T, 1)
or (T,), and `terminals` (T, 1) -- a few files call the last one `dones`.

`import_prompt_dt` turns such a directory into the two files of our format,
`<out_root>/<family>/train-expert.h5` and `<out_root>/<family>/prompt-expert.h5`.

Pickles can run arbitrary code when loaded, and these come from the internet, so they are read
with `safe_load_pickle`: an unpickler that only rebuilds plain containers, numbers, strings and
numpy arrays, and refuses everything else with `UnsafePickleError`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from promptdiff.data.hdf5_format import DatasetError, Trajectory, TrajectoryWriter, dataset_path
from promptdiff.envs.families import TaskFamily, get_family
from promptdiff.safe_io import UnreadableFileError, UnsafeFileError, load_pickle

__all__ = [
    "DEFAULT_ENV_PREFIXES",
    "UnsafePickleError",
    "default_env_prefix",
    "import_prompt_dt",
    "load_prompt_dt_file",
    "safe_load_pickle",
]


# ---------------------------------------------------------------------------------------------
# Restricted unpickling (the unpickler itself is promptdiff.safe_io's, shared with every loader)
# ---------------------------------------------------------------------------------------------


class UnsafePickleError(DatasetError):
    """A pickle asked for a global (a function or class) outside the small allowed set."""


def safe_load_pickle(path: str | Path) -> Any:
    """Load a pickle that may only contain lists, dicts, tuples, str/bytes/int/float/bool/None
    and numpy arrays, scalars and dtypes.

    Raises `UnsafePickleError` (a `DatasetError`) naming the file and the offending global when
    the pickle asks for anything else, and `DatasetError` naming the file for any other failure
    (missing file, truncated or garbage data).
    """
    try:
        return load_pickle(path)
    except UnsafeFileError as err:
        raise UnsafePickleError(err.path, err.problem) from None
    except UnreadableFileError as err:
        raise DatasetError(err.path, err.problem) from None


# ---------------------------------------------------------------------------------------------
# Converting Prompt-DT trajectories
# ---------------------------------------------------------------------------------------------

# Prompt-DT's file prefix per data family; families not listed use their own name.
DEFAULT_ENV_PREFIXES = {
    "cheetah_dir": "cheetah_dir",
    "cheetah_vel": "cheetah_vel",
    "ant_dir": "ant_dir",
    "ml1_reach": "ML1-reach-v2",
    "ml1_pick_place": "ML1-pick-place-v2",
}


def default_env_prefix(family: TaskFamily) -> str:
    """The `<env>` part of Prompt-DT's file names for a family (by its data family)."""
    return DEFAULT_ENV_PREFIXES.get(family.dataset_family, family.dataset_family)


def _as_family(family: str | TaskFamily) -> TaskFamily:
    return get_family(family) if isinstance(family, str) else family


def _float_matrix(path: Path, where: str, key: str, value, columns: int, what: str) -> np.ndarray:
    """`value` as a finite float32 (T, columns) array, or a DatasetError saying what is wrong."""
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise DatasetError(path, f"{where}: {key!r} is not a numeric array") from None
    if arr.ndim != 2:
        raise DatasetError(path, f"{where}: {key!r} has shape {arr.shape}, expected (T, {columns})")
    if arr.shape[1] != columns:
        raise DatasetError(path, f"{where}: {key!r} has {arr.shape[1]} columns, {what} expects {columns}")
    if not np.all(np.isfinite(arr)):
        raise DatasetError(path, f"{where}: {key!r} contains NaN or infinite values")
    return arr


def _step_vector(path: Path, where: str, key: str, value, length: int, dtype) -> np.ndarray:
    """A per-step column given as (T,) or (T, 1), flattened to (T,)."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        raise DatasetError(path, f"{where}: {key!r} is not an array") from None
    if arr.shape not in ((length,), (length, 1)):
        raise DatasetError(path, f"{where}: {key!r} has shape {arr.shape}, "
                                 f"expected ({length},) or ({length}, 1)")  # fmt: skip
    if arr.dtype == object:
        raise DatasetError(path, f"{where}: {key!r} is not a numeric array")
    arr = arr.reshape(length)
    if dtype is bool:
        if arr.dtype != bool and not np.all(np.isin(arr, (0, 1))):
            raise DatasetError(path, f"{where}: {key!r} holds values other than 0/1 or True/False")
        return arr.astype(bool)
    out = arr.astype(dtype)
    if not np.all(np.isfinite(out)):
        raise DatasetError(path, f"{where}: {key!r} contains NaN or infinite values")
    return out


def _convert(path: Path, index: int, record, family: TaskFamily, task: int) -> Trajectory:
    """One Prompt-DT trajectory dict -> Trajectory, checked against the family's sizes."""
    where = f"trajectory {index}"
    if not isinstance(record, dict):
        raise DatasetError(path, f"{where} is a {type(record).__name__}, expected a dict of arrays")
    done_key = "terminals" if "terminals" in record else "dones"
    for key in ("observations", "next_observations", "actions", "rewards", done_key):
        if key not in record:
            extra = " (nor 'dones')" if key == "terminals" else ""
            raise DatasetError(path, f"{where}: key {key!r}{extra} is missing "
                                     f"(keys present: {sorted(map(str, record))})")  # fmt: skip
    what = f"family {family.name}"
    obs = _float_matrix(path, where, "observations", record["observations"], family.obs_dim, what)
    next_obs = _float_matrix(path, where, "next_observations", record["next_observations"],
                             family.obs_dim, what)  # fmt: skip
    actions = _float_matrix(path, where, "actions", record["actions"], family.act_dim, what)
    T = actions.shape[0]
    if T == 0:
        raise DatasetError(path, f"{where} has no steps")
    for key, arr in (("observations", obs), ("next_observations", next_obs)):
        if arr.shape[0] != T:
            raise DatasetError(path, f"{where}: {key!r} has {arr.shape[0]} rows but 'actions' has {T}")
    rewards = _step_vector(path, where, "rewards", record["rewards"], T, np.float32)
    terminations = _step_vector(path, where, done_key, record[done_key], T, bool)
    truncations = np.zeros(T, dtype=bool)
    truncations[-1] = not terminations[-1]  # an episode that did not terminate was cut off
    return Trajectory(
        observations=np.concatenate([obs, next_obs[-1:]], axis=0),
        actions=actions,
        rewards=rewards,
        terminations=terminations,
        truncations=truncations,
        task_id=task,
    )


def load_prompt_dt_file(path: str | Path, family: str | TaskFamily, task: int) -> list[Trajectory]:
    """Safely load and convert one Prompt-DT pickle (a list of trajectory dicts) of task `task`."""
    path, family = Path(path), _as_family(family)
    data = safe_load_pickle(path)
    if not isinstance(data, list):
        raise DatasetError(path, f"top level is a {type(data).__name__}, expected a list of trajectory dicts")
    if not data:
        raise DatasetError(path, "holds no trajectories (empty list)")
    return [_convert(path, i, record, family, task) for i, record in enumerate(data)]


def _file_names(prefix: str, task: int) -> dict[str, str]:
    return {"train": f"{prefix}-{task}-expert.pkl", "prompt": f"{prefix}-{task}-prompt-expert.pkl"}


def _discover_tasks(src: Path, prefix: str) -> list[int]:
    """Task indices that have a training or prompt file in `src` (both are required later)."""
    pattern = re.compile(rf"{re.escape(prefix)}-(\d+)-(?:prompt-)?expert\.pkl")
    found = {int(m.group(1)) for p in src.iterdir() if (m := pattern.fullmatch(p.name))}
    if not found:
        hint = ""
        if (src / prefix).is_dir():
            hint = f"; the subdirectory {src / prefix} exists, perhaps the files are there"
        raise DatasetError(src, f"no Prompt-DT files found: looked for '{prefix}-<task>-expert.pkl' "
                                f"and '{prefix}-<task>-prompt-expert.pkl'{hint}")  # fmt: skip
    return sorted(found)


def import_prompt_dt(src: str | Path, family: str | TaskFamily, out_root: str | Path = "datasets",
                     env_prefix: str | None = None, tasks=None) -> list[Path]:  # fmt: skip
    """Convert a directory of Prompt-DT pickles into our training and prompt files.

    src:        directory holding `<env>-<i>-expert.pkl` and `<env>-<i>-prompt-expert.pkl`
    family:     task family (name or TaskFamily); the files are written under its data family
                (ant_dir_ood -> ant_dir), with that family's task parameters and split
    out_root:   dataset root; writes <out_root>/<data family>/{train,prompt}-expert.h5
    env_prefix: the `<env>` of the file names (default: `default_env_prefix(family)`)
    tasks:      task indices to import (default: every task with a file in `src`)

    Every input file is loaded and validated before anything is written, so a bad file raises
    `DatasetError` (naming the file and the problem) and leaves no output behind; existing
    output files are replaced only by a successful import. Returns [train path, prompt path].
    """
    src, requested = Path(src), _as_family(family)
    # A family that shares another's data (ant_dir_ood -> ant_dir) imports into that family's
    # files, with that family's task parameters and split, exactly as if it had been named.
    family = requested
    if requested.dataset_family != requested.name:
        family = get_family(requested.dataset_family)
    prefix = env_prefix or default_env_prefix(family)
    if not src.is_dir():
        raise DatasetError(src, "not a directory (expected the folder holding Prompt-DT's .pkl files)")

    if tasks is None:
        task_list = _discover_tasks(src, prefix)
    else:
        task_list = sorted({int(t) for t in tasks})
        if not task_list:
            raise DatasetError(src, "no tasks requested (tasks is empty)")
    out_of_range = [t for t in task_list if not 0 <= t < family.num_tasks]
    if out_of_range:
        raise DatasetError(src, f"task(s) {out_of_range} do not exist in family {family.name} "
                                f"({family.num_tasks} tasks, 0..{family.num_tasks - 1})")  # fmt: skip
    for task in task_list:
        for name in _file_names(prefix, task).values():
            if not (src / name).is_file():
                raise DatasetError(src / name, f"file not found (task {task} needs both its "
                                               "training and its prompt file)")  # fmt: skip

    # Load and validate everything first; nothing is written until all files are good.
    loaded: dict[str, list[Trajectory]] = {"train": [], "prompt": []}
    jobs = [(role, task, src / name)
            for task in task_list for role, name in _file_names(prefix, task).items()]  # fmt: skip
    for role, task, path in tqdm(jobs, desc=f"import prompt-dt {family.dataset_family}", unit="file"):
        loaded[role].extend(load_prompt_dt_file(path, family, task))

    params = family.task_params  # computed once: for Meta-World families this builds the envs
    config = {"source": str(src), "env_prefix": prefix, "tasks": task_list}
    outputs = []
    for role in ("train", "prompt"):
        out = dataset_path(family.dataset_family, role, "expert", out_root)
        with TrajectoryWriter(out, family=family.dataset_family, obs_dim=family.obs_dim,
                              act_dim=family.act_dim, role=role, quality="expert",
                              expert="prompt-dt import", seed=0, config=config) as writer:  # fmt: skip
            for traj in loaded[role]:
                writer.add(traj, task_param=params[traj.task_id], split=family.split_of(traj.task_id))
        outputs.append(out)
    return outputs
