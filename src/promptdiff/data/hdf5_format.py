"""The promptdiff trajectory file: HDF5, one group per episode (Minari-style layout).

    /                      file attributes (provenance, sizes, schema)
      schema               "promptdiff.trajectories"
      schema_version       1
      family               task family name, e.g. "ant_dir"
      obs_dim, act_dim     observation and action sizes
      role                 "train" (the expert training set) or "prompt" (the few-shot pool)
      quality              "expert", "medium" or "random"
      expert               what produced the actions (e.g. "ppo:datasets/ant_dir/expert_policy.pt")
      seed                 collection seed
      collection_config    JSON of the collection settings
      package_versions     JSON {package: version}
      num_episodes         number of episode groups
      complete             True, written last; a file without it is rejected
    /episode_<i>           one trajectory of length T
      observations         (T+1, obs_dim) float32: o_0 .. o_T (the last is the final observation)
      actions              (T, act_dim) float32
      rewards              (T,) float32
      terminations         (T,) bool
      truncations          (T,) bool
      successes            (T,) bool, optional (Meta-World, point robot)
      attrs: task_id, task_param (float array), split ("train"/"test"/"unused"), quality,
             episode_return, length
    /task_stats            per-task statistics over the file's episodes
      task_ids, num_episodes, return_mean, return_std, success_rate   (one entry per task)

Files are written through `TrajectoryWriter`, which writes to `<name>.partial` and renames it
onto `<name>` only after everything, `complete` included, is on disk: an interrupted write
never leaves a file that looks finished; it refuses non-finite values and a file without
episodes. `open_trajectories` validates a file's structure before anything reads it, and every
episode read is checked for NaN and inf; both raise `DatasetError` naming the file and the
problem. `summarise` (`promptdiff data info`) reads every episode, recomputes the per-task
statistics it reports and refuses a file whose stored statistics, counts, task ids or sizes
contradict its episodes or its family. `content_digest` names what a file holds (its arrays and
episode attributes, not its bytes): results record it to say which data they were made from.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

SCHEMA = "promptdiff.trajectories"
SCHEMA_VERSION = 1
ROLES = ("train", "prompt")
QUALITIES = ("expert", "medium", "random")
_EPISODE_FIELDS = ("observations", "actions", "rewards", "terminations", "truncations")
_FLOAT_FIELDS = ("observations", "actions", "rewards")
_STATS_COLUMNS = ("task_ids", "num_episodes", "return_mean", "return_std", "success_rate")


class DatasetError(ValueError):
    """A trajectory file is missing, unreadable, foreign or does not match what was asked."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass
class Trajectory:
    """One episode as numpy arrays (T steps)."""

    observations: np.ndarray  # (T+1, obs_dim)
    actions: np.ndarray  # (T, act_dim)
    rewards: np.ndarray  # (T,)
    terminations: np.ndarray  # (T,) bool
    truncations: np.ndarray  # (T,) bool
    task_id: int
    successes: np.ndarray | None = None  # (T,) bool

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    @property
    def episode_return(self) -> float:
        return float(np.sum(self.rewards, dtype=np.float64))

    @property
    def success(self) -> bool | None:
        return None if self.successes is None else bool(np.any(self.successes))


def _first_non_finite(values: np.ndarray) -> str | None:
    """Where the first NaN or inf of `values` is ("nan at step 3, column 1"), or None when all are finite."""
    finite = np.isfinite(values)
    if finite.all():
        return None
    where = np.argwhere(~finite)[0]
    place = f"step {where[0]}" + (f", column {where[1]}" if len(where) > 1 else "")
    return f"{values[tuple(where)]} at {place}"


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("promptdiff", "numpy", "h5py", "gymnasium", "mujoco", "metaworld", "torch",
                 "stable-baselines3"):  # fmt: skip
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def partial_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".partial")


class TrajectoryWriter:
    """Write a trajectory file atomically.

        with TrajectoryWriter(path, family="ant_dir", obs_dim=27, act_dim=8, role="train",
                              quality="expert", expert="...", seed=0, config={...}) as w:
            w.add(trajectory, task_param=..., split="train")

    On a clean exit the file is finalised and renamed into place; on an exception the partial
    file is deleted and the exception propagates.
    """

    def __init__(self, path: str | Path, *, family: str, obs_dim: int, act_dim: int, role: str,
                 quality: str, expert: str, seed: int, config: dict | None = None):  # fmt: skip
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        if quality not in QUALITIES:
            raise ValueError(f"quality must be one of {QUALITIES}, got {quality!r}")
        self.path = Path(path)
        self.tmp = partial_path(self.path)
        self.obs_dim, self.act_dim, self.quality = int(obs_dim), int(act_dim), quality
        self._attrs = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "family": family,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "role": role,
            "quality": quality,
            "expert": expert,
            "seed": int(seed),
            "collection_config": json.dumps(config or {}, sort_keys=True, default=str),
            "package_versions": json.dumps(package_versions(), sort_keys=True),
        }
        self._file: h5py.File | None = None
        self._count = 0
        self._stats: dict[int, list[tuple[float, bool | None]]] = {}

    def __enter__(self) -> "TrajectoryWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp.unlink(missing_ok=True)
        self._file = h5py.File(self.tmp, "w")
        self._file.attrs.update(self._attrs)
        return self

    def add(self, traj: Trajectory, *, task_param, split: str) -> None:
        assert self._file is not None, "use TrajectoryWriter as a context manager"
        T = len(traj)
        checks = {
            "observations": (traj.observations.shape, (T + 1, self.obs_dim)),
            "actions": (traj.actions.shape, (T, self.act_dim)),
            "rewards": (np.shape(traj.rewards), (T,)),
            "terminations": (np.shape(traj.terminations), (T,)),
            "truncations": (np.shape(traj.truncations), (T,)),
        }
        for name, (got, want) in checks.items():
            if tuple(got) != want:
                raise ValueError(f"episode {self._count}: {name} has shape {got}, expected {want}")
        for name in _FLOAT_FIELDS:
            bad = _first_non_finite(np.asarray(getattr(traj, name), np.float32))
            if bad is not None:
                raise ValueError(f"episode {self._count}: {name} holds {bad}")
        rewards = np.asarray(traj.rewards, np.float32)
        episode_return = float(np.sum(rewards, dtype=np.float64))  # of the rewards as stored
        g = self._file.create_group(f"episode_{self._count}")
        g.create_dataset("observations", data=np.asarray(traj.observations, np.float32))
        g.create_dataset("actions", data=np.asarray(traj.actions, np.float32))
        g.create_dataset("rewards", data=rewards)
        g.create_dataset("terminations", data=np.asarray(traj.terminations, bool))
        g.create_dataset("truncations", data=np.asarray(traj.truncations, bool))
        if traj.successes is not None:
            g.create_dataset("successes", data=np.asarray(traj.successes, bool))
        g.attrs.update({
            "task_id": int(traj.task_id),
            "task_param": np.asarray(task_param, np.float64).reshape(-1),
            "split": split,
            "quality": self.quality,
            "episode_return": episode_return,
            "length": T,
        })  # fmt: skip
        self._stats.setdefault(int(traj.task_id), []).append((episode_return, traj.success))
        self._count += 1

    def _finalise(self, f: h5py.File) -> None:
        if self._count == 0:
            raise ValueError(f"{self.path}: no episodes were added; a file without episodes is not written")
        tasks = sorted(self._stats)
        returns = [np.array([r for r, _ in self._stats[t]]) for t in tasks]
        succ = [[s for _, s in self._stats[t]] for t in tasks]
        st = f.create_group("task_stats")
        st.create_dataset("task_ids", data=np.array(tasks, np.int64))
        st.create_dataset("num_episodes", data=np.array([len(r) for r in returns], np.int64))
        st.create_dataset("return_mean", data=np.array([r.mean() for r in returns]))
        st.create_dataset("return_std", data=np.array([r.std() for r in returns]))
        rates = [np.nan if any(s is None for s in ss) else float(np.mean(ss)) for ss in succ]
        st.create_dataset("success_rate", data=np.array(rates))
        f.attrs["num_episodes"] = self._count
        f.attrs["complete"] = True

    def __exit__(self, exc_type, exc, tb) -> None:
        f, self._file = self._file, None
        if exc_type is None:
            try:
                self._finalise(f)
                f.flush()
                f.close()
                os.replace(self.tmp, self.path)
            except BaseException:
                f.close()
                self.tmp.unlink(missing_ok=True)
                raise
        else:
            f.close()
            self.tmp.unlink(missing_ok=True)


class TrajectoryFile:
    """A validated, open trajectory file. Use `open_trajectories` to create one."""

    def __init__(self, path: Path, handle: h5py.File):
        self.path = path
        self._h = handle
        self.attrs = {k: _plain(v) for k, v in handle.attrs.items()}
        self.family: str = self.attrs["family"]
        self.obs_dim: int = int(self.attrs["obs_dim"])
        self.act_dim: int = int(self.attrs["act_dim"])
        self.role: str = self.attrs["role"]
        self.quality: str = self.attrs["quality"]
        self.num_episodes: int = int(self.attrs["num_episodes"])
        self._task_of = [int(handle[f"episode_{i}"].attrs["task_id"]) for i in range(self.num_episodes)]

    # -- reading -------------------------------------------------------------------------------
    @property
    def tasks(self) -> list[int]:
        return sorted(set(self._task_of))

    @property
    def task_stats(self) -> dict[int, dict[str, float]]:
        st = self._h["task_stats"]
        ids = st["task_ids"][()]
        cols = {k: st[k][()] for k in ("num_episodes", "return_mean", "return_std", "success_rate")}
        return {int(t): {k: float(v[i]) for k, v in cols.items()} for i, t in enumerate(ids)}

    def episode(self, index: int) -> Trajectory:
        try:
            g = self._h[f"episode_{index}"]
            traj = Trajectory(
                observations=g["observations"][()],
                actions=g["actions"][()],
                rewards=g["rewards"][()],
                terminations=g["terminations"][()],
                truncations=g["truncations"][()],
                task_id=int(g.attrs["task_id"]),
                successes=g["successes"][()] if "successes" in g else None,
            )
        except (OSError, KeyError) as err:
            raise DatasetError(self.path, f"episode_{index} cannot be read ({err}); the file is corrupt") from None
        for field in _FLOAT_FIELDS:
            bad = _first_non_finite(getattr(traj, field))
            if bad is not None:
                raise DatasetError(self.path, f"episode_{index}/{field} holds {bad}")
        return traj

    def episode_attrs(self, index: int) -> dict:
        """The attributes stored with one episode (task_id, task_param, split, quality)."""
        return {k: _plain(v) for k, v in self._h[f"episode_{index}"].attrs.items()}

    def task_params(self) -> dict[int, np.ndarray]:
        out = {}
        for i, t in enumerate(self._task_of):
            if t not in out:
                out[t] = np.asarray(self._h[f"episode_{i}"].attrs["task_param"], np.float64)
                if not np.isfinite(out[t]).all():
                    raise DatasetError(self.path, f"episode_{i} attribute 'task_param' is {out[t].tolist()}")
        return out

    def trajectories(self, task: int | None = None) -> list[Trajectory]:
        """All episodes (of one task, if given), in file order."""
        return [self.episode(i) for i, t in enumerate(self._task_of) if task is None or t == task]

    def by_task(self, tasks=None) -> dict[int, list[Trajectory]]:
        wanted = self.tasks if tasks is None else list(tasks)
        missing = sorted(set(wanted) - set(self._task_of))
        if missing:
            raise DatasetError(self.path, f"no episodes for task(s) {missing} (file has {self.tasks})")
        out: dict[int, list[Trajectory]] = {t: [] for t in wanted}
        for i, t in enumerate(self._task_of):
            if t in out:
                out[t].append(self.episode(i))
        return out

    def close(self) -> None:
        self._h.close()

    def __enter__(self) -> "TrajectoryFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _plain(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def open_trajectories(path: str | Path, *, family: str | None = None, obs_dim: int | None = None,
                      act_dim: int | None = None, role: str | None = None) -> TrajectoryFile:  # fmt: skip
    """Open and validate a trajectory file; raise DatasetError naming the file and the problem."""
    path = Path(path)
    if not path.exists():
        hint = ""
        if partial_path(path).exists():
            hint = f" (an interrupted write left {partial_path(path).name}; rerun the collection)"
        raise DatasetError(path, f"file not found{hint}")
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        reason = "truncated" if "truncated" in str(err).lower() else "not a readable HDF5 file"
        raise DatasetError(path, f"{reason} ({str(err).splitlines()[0]})") from None
    try:
        _validate(path, handle, family=family, obs_dim=obs_dim, act_dim=act_dim, role=role)
        return TrajectoryFile(path, handle)
    except DatasetError:
        handle.close()
        raise
    except (OSError, KeyError, TypeError, ValueError) as err:
        handle.close()
        raise DatasetError(path, f"corrupt file ({err})") from None


def _validate(path, h, *, family, obs_dim, act_dim, role) -> None:
    attrs = h.attrs
    if _plain(attrs.get("schema")) != SCHEMA:
        raise DatasetError(path, f"not a promptdiff trajectory file (attribute 'schema' is "
                                 f"{_plain(attrs.get('schema'))!r}, expected {SCHEMA!r})")  # fmt: skip
    version = _plain(attrs.get("schema_version"))
    if version != SCHEMA_VERSION:
        raise DatasetError(path, f"schema_version {version} is not supported (expected {SCHEMA_VERSION})")
    for key in ("family", "obs_dim", "act_dim", "role", "quality", "num_episodes"):
        if key not in attrs:
            raise DatasetError(path, f"file attribute {key!r} is missing")
    if not bool(_plain(attrs.get("complete", False))):
        raise DatasetError(path, "incomplete file (attribute 'complete' missing): the write was interrupted")
    for key in ("obs_dim", "act_dim", "num_episodes"):
        value = _plain(attrs[key])
        if not _is_int(value) or value < (0 if key == "num_episodes" else 1):
            raise DatasetError(path, f"file attribute {key!r} is {value!r}, expected a positive integer")
    for key, allowed in (("role", ROLES), ("quality", QUALITIES)):
        if _plain(attrs[key]) not in allowed:
            raise DatasetError(path, f"file attribute {key!r} is {_plain(attrs[key])!r}, expected one of {allowed}")
    checks = [("family", family), ("obs_dim", obs_dim), ("act_dim", act_dim), ("role", role)]
    for key, want in checks:
        got = _plain(attrs[key])
        if want is not None and got != want:
            raise DatasetError(path, f"{key} is {got!r}, expected {want!r}")
    n = int(attrs["num_episodes"])
    if n == 0:
        raise DatasetError(path, "num_episodes is 0: the file holds no episodes")
    _validate_task_stats(path, h)
    od, ad = int(attrs["obs_dim"]), int(attrs["act_dim"])
    for i in range(n):
        name = f"episode_{i}"
        if name not in h:
            raise DatasetError(path, f"{name} is missing ({n} episodes declared)")
        g = h[name]
        try:  # each dataset is opened once: this loop is most of the cost of opening a file
            data = {field: g[field] for field in _EPISODE_FIELDS}
        except KeyError:
            missing = next(field for field in _EPISODE_FIELDS if field not in g)
            raise DatasetError(path, f"{name}/{missing} is missing") from None
        if "successes" in g:
            data["successes"] = g["successes"]
        T = data["actions"].shape[0]
        want = {"observations": (T + 1, od), "actions": (T, ad), "rewards": (T,),
                "terminations": (T,), "truncations": (T,), "successes": (T,)}  # fmt: skip
        for field, ds in data.items():
            if ds.shape != want[field]:
                raise DatasetError(path, f"{name}/{field} has shape {ds.shape}, expected {want[field]}")
            if field in _FLOAT_FIELDS and ds.dtype.kind != "f":
                raise DatasetError(path, f"{name}/{field} has dtype {ds.dtype}, expected floating point")
        if "task_id" not in g.attrs:
            raise DatasetError(path, f"{name} has no 'task_id' attribute")
        task = _plain(g.attrs["task_id"])
        if not _is_int(task) or task < 0:
            raise DatasetError(path, f"{name} attribute 'task_id' is {task!r}, expected a non-negative integer")
    groups = sum(1 for key in h if key.startswith("episode_"))
    if groups != n:
        raise DatasetError(path, f"num_episodes is {n} but the file holds {groups} episode groups")


def _validate_task_stats(path, h) -> None:
    """The `task_stats` group holds every column, one entry per task in each (its values are checked by `summarise`)."""
    if "task_stats" not in h:
        raise DatasetError(path, "group 'task_stats' is missing")
    st = h["task_stats"]
    for column in _STATS_COLUMNS:
        if column not in st:
            raise DatasetError(path, f"task_stats/{column} is missing")
        if len(st[column].shape) != 1 or st[column].shape != st["task_ids"].shape:
            raise DatasetError(path, f"task_stats/{column} has shape {st[column].shape}, expected "
                                     f"{st['task_ids'].shape} like task_stats/task_ids")  # fmt: skip
    for column in _STATS_COLUMNS:
        kinds, expected = ("iu", "integers") if column in ("task_ids", "num_episodes") else ("f", "floating point")
        if st[column].dtype.kind not in kinds:
            raise DatasetError(path, f"task_stats/{column} has dtype {st[column].dtype}, expected {expected}")


def dataset_path(family: str, role: str, quality: str = "expert", root: str | Path = "datasets") -> Path:
    """Where a family's file lives: <root>/<family>/<role>-<quality>.h5 (role: train or prompt)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if quality not in QUALITIES:
        raise ValueError(f"quality must be one of {QUALITIES}, got {quality!r}")
    return Path(root) / family / f"{role}-{quality}.h5"


def content_digest(path: str | Path) -> str:
    """A digest (16 hex digits of SHA-256) of the data a trajectory file holds: every array and every attribute of
    its episodes and task statistics, in name order. Not the file's own attributes (where, with which settings
    and package versions it was written) nor HDF5's byte layout, which differ between two writes of the same
    data: two collections of the same trajectories have the same digest, one changed value changes it.
    Computed once per (file, size, modification time) in a process."""
    path = Path(path)
    st = path.stat()
    return _content_digest(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _content_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()

    def update(prefix: str, value) -> None:
        value = np.asarray(value)
        if value.dtype.kind == "O":  # variable-length strings: their text, not the addresses of the objects
            value = value.astype(str)
        h.update(f"{prefix}{value.dtype.str}:{value.shape}\0".encode() + np.ascontiguousarray(value).tobytes())

    def add(name: str, obj) -> None:
        h.update(name.encode() + b"\0")
        for key in sorted(obj.attrs):
            update(f"{key}:", obj.attrs[key])
        if isinstance(obj, h5py.Dataset):
            update("", obj[()])

    try:
        with h5py.File(path, "r") as f:
            f.visititems(add)  # every object below the root, in name order; the root's attributes left out
    except OSError as err:
        raise DatasetError(path, f"cannot read it as HDF5 ({err})") from None
    return h.hexdigest()[:16]


def summarise(path: str | Path) -> dict:
    """Verify a file and summarise it per task (`promptdiff data info`); every value is finite or None.

    Reads every episode (refusing NaN and inf) and recomputes what it reports from them: per task the
    episodes, return mean, std (population), min and max, mean length and success rate (None where the
    episodes carry no success flag). Raises `DatasetError` naming the file and the field when the file
    contradicts itself or its family: sizes other than the registered family's, task ids outside the
    family, an episode's `episode_return` or `length` attribute, or a stored `task_stats` entry that
    differs from what its episodes give.
    """
    path = Path(path)
    with open_trajectories(path) as f:
        fam = _registered_family(path, f)
        episodes: dict[int, list[tuple[float, float, int, bool | None]]] = {}
        for i, task in enumerate(f._task_of):
            if task >= fam.num_tasks:
                raise DatasetError(path, f"episode_{i} attribute 'task_id' is {task}, but family {fam.name!r} "
                                         f"has tasks 0..{fam.num_tasks - 1}")  # fmt: skip
            traj, attrs = f.episode(i), f._h[f"episode_{i}"].attrs
            ret, scale = traj.episode_return, float(np.sum(np.abs(traj.rewards), dtype=np.float64))
            if "length" in attrs and _plain(attrs["length"]) != len(traj):
                raise DatasetError(path, f"episode_{i} attribute 'length' is {_plain(attrs['length'])!r}, "
                                         f"but the episode has {len(traj)} steps")  # fmt: skip
            stored = _plain(attrs.get("episode_return", ret))
            if not _close(stored, ret, scale):
                raise DatasetError(path, f"episode_{i} attribute 'episode_return' is {stored!r}, but its rewards "
                                         f"sum to {ret:.6g}")  # fmt: skip
            episodes.setdefault(task, []).append((ret, scale, len(traj), traj.success))
        tasks = {t: _task_summary(episodes[t]) for t in sorted(episodes)}
        _check_task_stats(path, f._h["task_stats"], tasks, {t: np.mean([e[1] for e in episodes[t]]) for t in tasks})
        return {"family": f.family, "role": f.role, "quality": f.quality, "obs_dim": f.obs_dim,
                "act_dim": f.act_dim, "episodes": f.num_episodes,
                "steps": int(sum(n for eps in episodes.values() for _, _, n, _ in eps)), "tasks": tasks}  # fmt: skip


def _registered_family(path: Path, f: TrajectoryFile):
    """The family the file names, from the registry, with the file's sizes checked against it."""
    from promptdiff.envs import get_family

    try:
        fam = get_family(f.family)
    except KeyError as err:
        raise DatasetError(path, f"file attribute 'family': {err.args[0]}") from None
    for key in ("obs_dim", "act_dim"):
        if getattr(f, key) != getattr(fam, key):
            raise DatasetError(path, f"file attribute {key!r} is {getattr(f, key)}, but family {fam.name!r} "
                                     f"has {key} {getattr(fam, key)}")  # fmt: skip
    return fam


def _task_summary(episodes: list[tuple[float, float, int, bool | None]]) -> dict:
    """One task's statistics from its episodes' (return, sum of |reward|, length, success)."""
    returns = np.array([e[0] for e in episodes], np.float64)
    successes = [e[3] for e in episodes]
    rate = None if any(s is None for s in successes) else float(np.mean(successes))
    return {"num_episodes": len(episodes), "return_mean": float(returns.mean()), "return_std": float(returns.std()),
            "return_min": float(returns.min()), "return_max": float(returns.max()),
            "length_mean": float(np.mean([e[2] for e in episodes])), "success_rate": rate}  # fmt: skip


def _check_task_stats(path: Path, st: h5py.Group, tasks: dict[int, dict], scales: dict[int, float]) -> None:
    """Raise unless the stored `task_stats` say what the episodes say (one entry per task, same values)."""
    ids = [int(t) for t in st["task_ids"][()]]
    if sorted(ids) != sorted(tasks):
        raise DatasetError(path, f"task_stats/task_ids is {ids}, but the episodes' tasks are {sorted(tasks)}")
    for j, task in enumerate(ids):
        for column in ("num_episodes", "return_mean", "return_std", "success_rate"):
            stored, value = st[column][j].item(), tasks[task][column]
            if column == "success_rate" and (value is None or np.isnan(stored)):
                ok = value is None and np.isnan(stored)
            elif column == "num_episodes":
                ok = stored == value
            else:
                ok = _close(stored, value, scales[task])
            if not ok:
                shown = value if value is None or isinstance(value, int) else f"{value:.6g}"
                raise DatasetError(path, f"task_stats/{column} of task {task} is {stored!r}, "
                                         f"but its episodes give {shown}")  # fmt: skip


def _close(stored, value: float, scale: float) -> bool:
    """Whether a stored float agrees with a recomputed one, up to float32 rounding of rewards summing to `scale`."""
    if not isinstance(stored, (int, float)) or isinstance(stored, bool) or not np.isfinite(stored):
        return False
    return abs(stored - value) <= 1e-5 * abs(value) + 1e-4 * (1.0 + scale)
