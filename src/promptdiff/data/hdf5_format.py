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
never leaves a file that looks finished. `open_trajectories` validates a file before anything
reads it and raises `DatasetError` naming the file and the problem.
"""

from __future__ import annotations

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
        g = self._file.create_group(f"episode_{self._count}")
        g.create_dataset("observations", data=np.asarray(traj.observations, np.float32))
        g.create_dataset("actions", data=np.asarray(traj.actions, np.float32))
        g.create_dataset("rewards", data=np.asarray(traj.rewards, np.float32))
        g.create_dataset("terminations", data=np.asarray(traj.terminations, bool))
        g.create_dataset("truncations", data=np.asarray(traj.truncations, bool))
        if traj.successes is not None:
            g.create_dataset("successes", data=np.asarray(traj.successes, bool))
        g.attrs.update({
            "task_id": int(traj.task_id),
            "task_param": np.asarray(task_param, np.float64).reshape(-1),
            "split": split,
            "quality": self.quality,
            "episode_return": traj.episode_return,
            "length": T,
        })  # fmt: skip
        self._stats.setdefault(int(traj.task_id), []).append((traj.episode_return, traj.success))
        self._count += 1

    def _finalise(self, f: h5py.File) -> None:
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
            return Trajectory(
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

    def task_params(self) -> dict[int, np.ndarray]:
        out = {}
        for i, t in enumerate(self._task_of):
            if t not in out:
                out[t] = np.asarray(self._h[f"episode_{i}"].attrs["task_param"], np.float64)
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
    except (OSError, KeyError, TypeError) as err:
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
    checks = [("family", family), ("obs_dim", obs_dim), ("act_dim", act_dim), ("role", role)]
    for key, want in checks:
        got = _plain(attrs[key])
        if want is not None and got != want:
            raise DatasetError(path, f"{key} is {got!r}, expected {want!r}")
    n = int(attrs["num_episodes"])
    if "task_stats" not in h:
        raise DatasetError(path, "group 'task_stats' is missing")
    od, ad = int(attrs["obs_dim"]), int(attrs["act_dim"])
    for i in range(n):
        name = f"episode_{i}"
        if name not in h:
            raise DatasetError(path, f"{name} is missing ({n} episodes declared)")
        g = h[name]
        for field in _EPISODE_FIELDS:
            if field not in g:
                raise DatasetError(path, f"{name}/{field} is missing")
        T = g["actions"].shape[0]
        want = {"observations": (T + 1, od), "actions": (T, ad), "rewards": (T,),
                "terminations": (T,), "truncations": (T,)}  # fmt: skip
        for field, shape in want.items():
            if g[field].shape != shape:
                raise DatasetError(path, f"{name}/{field} has shape {g[field].shape}, expected {shape}")
        if "task_id" not in g.attrs:
            raise DatasetError(path, f"{name} has no 'task_id' attribute")


def dataset_path(family: str, role: str, quality: str = "expert", root: str | Path = "datasets") -> Path:
    """Where a family's file lives: <root>/<family>/<role>-<quality>.h5 (role: train or prompt)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if quality not in QUALITIES:
        raise ValueError(f"quality must be one of {QUALITIES}, got {quality!r}")
    return Path(root) / family / f"{role}-{quality}.h5"


def summarise(path: str | Path) -> dict:
    """Per-task statistics of a file (used by `promptdiff data info`)."""
    with open_trajectories(path) as f:
        return {"family": f.family, "role": f.role, "quality": f.quality, "episodes": f.num_episodes,
                "tasks": {t: s for t, s in f.task_stats.items()}}  # fmt: skip
