"""Minari interoperability: promptdiff trajectory files to and from Minari datasets.

Minari (the Farama Foundation's standard for offline RL data) stores episodes as observations
(T + 1), actions, rewards, terminations and truncations, which is our file's layout, plus free
per-episode metadata and dataset metadata. The mapping:

    promptdiff file                        Minari dataset
    episode_<i> observations .. truncations   episode i, the same arrays and dtypes
    episode_<i> successes (T,)               infos["success"] (T + 1,): False at reset, then successes
    episode attrs task_id, task_param,        episode metadata (same names)
      split, quality
    file attrs (family, role, quality,        dataset metadata "promptdiff" (JSON); algorithm_name
      expert, seed, collection_config)          is the expert; env_spec the family's registered env

`export_minari` writes a dataset through Minari's own API (`minari.create_dataset_from_buffers`)
under Minari's root (MINARI_DATASETS_PATH, default ~/.minari/datasets) or one given;
`import_minari` writes our trajectory file from any Minari dataset whose episodes carry a task id
(a named episode-metadata field, or a mapping from episode index to task id). Exporting a file
and importing the dataset gives back the same episodes, attributes and statistics.

Minari is an optional extra: `pip install -e ".[minari]"`.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from promptdiff.data.hdf5_format import Trajectory, TrajectoryWriter, dataset_path, open_trajectories
from promptdiff.envs import get_family

INSTALL_HINT = 'Minari is an optional extra: pip install -e ".[minari]" (or pip install "minari[hdf5]==0.5.4")'


def _minari():
    try:
        import minari
    except ImportError:
        raise ImportError(f"this command needs the minari package. {INSTALL_HINT}") from None
    return minari


@contextlib.contextmanager
def _root(minari_root: str | Path | None):
    """Minari reads its root from MINARI_DATASETS_PATH; set it for the duration when one is given."""
    if minari_root is None:
        yield
        return
    before = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(Path(minari_root).resolve())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = before


def default_dataset_id(family: str, role: str = "train", quality: str = "expert") -> str:
    return f"promptdiff/{family}-{role}-{quality}-v0"


def export_minari(family: str, role: str = "train", quality: str = "expert", root: str | Path = "datasets",
                  dataset_id: str | None = None, minari_root: str | Path | None = None) -> str:  # fmt: skip
    """Write the family's trajectory file (role, quality) as the Minari dataset `dataset_id`; returns the id."""
    minari = _minari()
    import gymnasium as gym
    from minari.data_collector.episode_buffer import EpisodeBuffer

    fam = get_family(family)
    path = dataset_path(fam.dataset_family, role, quality, root)
    dataset_id = dataset_id or default_dataset_id(fam.dataset_family, role, quality)
    with _root(minari_root):
        if dataset_id in minari.list_local_datasets():
            raise ValueError(f"Minari dataset {dataset_id} already exists under "
                             f"{minari.storage.get_dataset_path()}: delete it (minari.delete_dataset) or choose "
                             "another --dataset_id")  # fmt: skip
        with open_trajectories(path, family=fam.dataset_family, role=role) as f:
            buffers, metadata = [], []
            for i in range(f.num_episodes):
                traj, attrs = f.episode(i), f.episode_attrs(i)  # attrs: task_param, split, quality
                infos = None if traj.successes is None else {"success": np.concatenate([[False], traj.successes])}
                buffers.append(EpisodeBuffer(id=i, observations=traj.observations, actions=traj.actions,
                                             rewards=traj.rewards, terminations=traj.terminations,
                                             truncations=traj.truncations, infos=infos))  # fmt: skip
                metadata.append({"task_id": traj.task_id, "task_param": np.asarray(attrs["task_param"], np.float64),
                                 "split": str(attrs["split"]), "quality": str(attrs["quality"])})  # fmt: skip
            provenance = {k: f.attrs[k] for k in ("family", "role", "quality", "expert", "seed", "collection_config")}
            expert = str(f.attrs["expert"])
        space = lambda low, high, n: gym.spaces.Box(low, high, (n,), np.float32)  # noqa: E731
        try:
            with warnings.catch_warnings():  # Minari's advice to fill in author, email, permalink and eval env
                warnings.filterwarnings("ignore", message=r"`\w+` is set to None", category=UserWarning)
                ds = minari.create_dataset_from_buffers(
                    dataset_id, buffers, env=gym.spec(fam.env_id), observation_space=space(-np.inf, np.inf, fam.obs_dim),
                    action_space=space(-1.0, 1.0, fam.act_dim), algorithm_name=expert, data_format="hdf5",
                    description=f"promptdiff {fam.dataset_family} {role} set ({quality}): {fam.description}. "
                                f"Exported from {path.name}; task id per episode in the episode metadata.")  # fmt: skip
            ds.storage.update_episode_metadata(metadata)
            ds.storage.update_metadata({"promptdiff": json.dumps(provenance, sort_keys=True)})
        except BaseException:
            with contextlib.suppress(Exception):
                minari.delete_dataset(dataset_id)  # nothing half-written left behind
            raise
    return dataset_id


def _task_ids(ds, task_field: str, mapping: str | Path | None) -> list[int]:
    """The task id of every episode: from a JSON file {episode index: task id}, or an episode-metadata field."""
    n = ds.total_episodes
    if mapping is not None:
        table = {int(k): int(v) for k, v in json.loads(Path(mapping).read_text()).items()}
        missing = [i for i in range(n) if i not in table]
        if missing:
            raise ValueError(f"{mapping}: no task id for episodes {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        return [table[i] for i in range(n)]
    ids = []
    for i, meta in enumerate(ds.storage.get_episode_metadata(range(n))):
        if task_field not in meta:
            raise ValueError(f"Minari dataset {ds.spec.dataset_id}: episode {i} has no {task_field!r} in its "
                             f"metadata (fields: {sorted(meta)}); name the field with --task_field or give "
                             "--task_map FILE.json ({episode index: task id})")  # fmt: skip
        ids.append(int(np.asarray(meta[task_field]).reshape(-1)[0]))
    return ids


def import_minari(dataset_id: str, family: str, role: str | None = None, quality: str | None = None,
                  root: str | Path = "datasets", out: str | Path | None = None, task_field: str = "task_id",
                  task_map: str | Path | None = None, minari_root: str | Path | None = None,
                  overwrite: bool = False) -> Path:  # fmt: skip
    """Write the Minari dataset `dataset_id` as our trajectory file (default: the family's file for role/quality
    under `root`); returns its path. Observation and action sizes must be the family's. role and quality default
    to those recorded by `export_minari`, else "train" and "expert". An existing file is kept unless `overwrite`."""
    minari = _minari()
    fam = get_family(family)
    with _root(minari_root):
        if dataset_id not in minari.list_local_datasets():
            raise ValueError(f"no local Minari dataset {dataset_id} under {minari.storage.get_dataset_path()}")
        ds = minari.load_dataset(dataset_id)
        obs_shape, act_shape = ds.observation_space.shape, ds.action_space.shape
        if obs_shape != (fam.obs_dim,) or act_shape != (fam.act_dim,):
            raise ValueError(f"Minari dataset {dataset_id}: observations {obs_shape} and actions {act_shape}, but "
                             f"{fam.name} has ({fam.obs_dim},) and ({fam.act_dim},)")  # fmt: skip
        tasks = _task_ids(ds, task_field, task_map)
        unknown = sorted({t for t in tasks if not 0 <= t < fam.num_tasks})
        if unknown:
            raise ValueError(f"Minari dataset {dataset_id}: task ids {unknown[:10]} are not tasks of {fam.name} "
                             f"(0 .. {fam.num_tasks - 1})")  # fmt: skip
        metas = list(ds.storage.get_episode_metadata(range(ds.total_episodes)))
        ours = json.loads(ds.storage.metadata.get("promptdiff", "{}"))
        role, quality = role or ours.get("role", "train"), quality or ours.get("quality", "expert")
        path = Path(out) if out is not None else dataset_path(fam.dataset_family, role, quality, root)
        if path.exists() and not overwrite:
            raise ValueError(f"{path} exists: pass --overwrite to replace it, or --out another file")
        config = ours.get("collection_config", json.dumps({"minari_dataset": dataset_id}))
        with TrajectoryWriter(path, family=fam.dataset_family, obs_dim=fam.obs_dim, act_dim=fam.act_dim, role=role,
                              quality=quality, expert=ours.get("expert") or ds.storage.metadata.get("algorithm_name") or f"minari:{dataset_id}",
                              seed=int(ours.get("seed", 0)), config=json.loads(config)) as w:  # fmt: skip
            for ep, task, meta in zip(ds.iterate_episodes(), tasks, metas):
                succ = (ep.infos or {}).get("success")
                traj = Trajectory(np.asarray(ep.observations, np.float32), np.asarray(ep.actions, np.float32),
                                  np.asarray(ep.rewards, np.float32), np.asarray(ep.terminations, bool),
                                  np.asarray(ep.truncations, bool), task,
                                  None if succ is None else np.asarray(succ, bool)[1:])  # fmt: skip
                param = meta.get("task_param", fam.task_params[task])
                w.add(traj, task_param=param, split=str(meta.get("split", fam.split_of(task))))
    return path


def summarise_minari(dataset_id: str, family: str, minari_root: str | Path | None = None) -> dict:
    """`promptdiff data info` for a Minari dataset: converted to a temporary trajectory file, which is validated
    and summarised as any file is."""
    import tempfile

    from promptdiff.data.hdf5_format import summarise

    with tempfile.TemporaryDirectory() as tmp:
        summary = summarise(import_minari(dataset_id, family, out=Path(tmp) / "dataset.h5", minari_root=minari_root))
    return {"minari_dataset": dataset_id, **summary}


def is_minari_id(name: str) -> bool:
    """A Minari dataset id (namespace/name-vN) rather than a file path."""
    return not Path(name).exists() and not name.endswith((".h5", ".hdf5")) and "-v" in name


__all__ = ["export_minari", "import_minari", "summarise_minari", "default_dataset_id", "is_minari_id",
           "INSTALL_HINT"]
