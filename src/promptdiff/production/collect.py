"""Expert data collection: `promptdiff collect --family <family>` (or `--config conf/collect/<family>.yaml`).

For every task of a family it rolls out the family's expert and writes, per data quality and role,
  <root>/<family>/train-<quality>.h5    the training set (`episodes_per_task` per task)
  <root>/<family>/prompt-<quality>.h5   the few-shot prompt pool (`prompt_episodes` per task,
                                         from a separate seed)
and refreshes the dataset card (card.json + README.md) with per-task expert and random returns.
Settings left unset take the family's `collect_defaults`, then the generic defaults below. Each
file is written atomically; finished files are skipped on a rerun, so an interrupted collection
resumes with the file it was writing. `ensure_files` makes just the files a run reads, when they
are missing (the command line calls it before `promptdiff fit`; readers never do).

One collection at a time writes a family's folder (a lock file there); the next one removes the
`.partial` files an interrupted one left. Worker processes die with the process that started them.
The data depend on the settings (seeds, sizes, noise, `batch_size`, which fixes how action noise
is drawn) and on nothing else: not on the number of workers, the thread count or the machine's load.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from promptdiff.data.hdf5_format import (
    QUALITIES,
    ROLES,
    DatasetError,
    Trajectory,
    TrajectoryWriter,
    dataset_path,
    open_trajectories,
    partial_path,
)
from promptdiff.envs import TaskFamily, get_family, make_env
from promptdiff.envs.families import load_plugins
from promptdiff.lifetime import die_with
from promptdiff.threads import limit_threads
from promptdiff.production.experts import LearnedExpert, NoisyPolicy, RandomPolicy, scripted_expert

GENERIC_DEFAULTS = {"episodes_per_task": 20, "prompt_episodes": 5, "qualities": ["expert"], "action_noise": 0.0,
                    "prompt_action_noise": 0.0, "tasks": None}  # fmt: skip


@dataclass
class CollectConfig:
    """Settings of one collection run (the fields of conf/collect/<family>.yaml)."""

    family: str
    """Task family to collect (cheetah_dir, cheetah_vel, ant_dir, ml1_reach, ml1_pick_place, point_robot, or a
    plugin's)."""
    root: str = "datasets"
    """Dataset root; files go to <root>/<family>/."""
    seed: int = 0
    """Base seed of the training-set episodes."""
    prompt_seed: int = 100_000
    """Base seed of the prompt-pool episodes (kept apart from the training set)."""
    episodes_per_task: int | None = None
    """Training-set episodes per task (default: the family's, else 20)."""
    prompt_episodes: int | None = None
    """Prompt-pool episodes per task (default: the family's, else 5)."""
    qualities: list[str] | None = None
    """Data qualities to write: expert, medium, random (default: the family's, else [expert])."""
    roles: list[str] = field(default_factory=lambda: ["train", "prompt"])
    """Files to write per quality: train (the training set) and/or prompt (the few-shot pool)."""
    tasks: list[int] | None = None
    """Task indices to collect (default: the family's, else every task of the family)."""
    expert_policy: str | None = None
    """Learned families: the expert actor file (default: <root>/<family>/expert_policy.pt)."""
    medium_policy: str | None = None
    """Learned families with medium data: the medium actor file (default: <root>/<family>/medium_policy.pt)."""
    stochastic_train: bool = True
    """Learned experts, training set: sample the policy's Gaussian (the prompt pool uses its mean)."""
    action_noise: float | None = None
    """Scripted experts, training set: Gaussian action noise, std as a fraction of the half range (default: the
    family's, else 0)."""
    prompt_action_noise: float | None = None
    """Scripted experts, prompt pool: the same, usually smaller (default: the family's, else 0)."""
    batch_size: int = 25
    """Environments stepped together (one batched policy call per step); each batch draws its action noise from
    its own generator, so this is part of what defines the data."""
    workers: int = 0
    """Worker processes that run batches in parallel; 0: one per CPU core. Results do not depend on it."""
    overwrite: bool = False
    """Rewrite files that already exist and are valid."""
    card: bool = True
    """Write the dataset card (card.json, README.md) after collecting."""

def resolve_config(cfg: CollectConfig) -> CollectConfig:
    """The config with every unset field filled: the family's collect_defaults, then GENERIC_DEFAULTS; policy
    files default to <root>/<family>/{expert,medium}_policy.pt. Bad settings raise before anything is written."""
    fam = get_family(cfg.family)
    values = asdict(cfg)
    for key, generic in GENERIC_DEFAULTS.items():
        if values[key] is None:
            values[key] = fam.collect_defaults.get(key, generic)
    for key, name, needed in (("expert_policy", "expert_policy.pt", "expert"), ("medium_policy", "medium_policy.pt", "medium")):
        if values[key] is None and fam.expert == "learned" and needed in values["qualities"]:
            values[key] = str(Path(cfg.root) / fam.expert_name / name)
    out = CollectConfig(**values)
    _check(out, fam)
    return out


# an episode's seed is base * 1_000_003 + task * SEED_STRIDE + episode: more episodes would repeat a seed
SEED_STRIDE = 1_009


def _check(cfg: CollectConfig, fam: TaskFamily) -> None:
    """Raise ValueError (one line, naming the setting) for settings that cannot make a useful file."""
    if not cfg.qualities or any(q not in QUALITIES for q in cfg.qualities):
        raise ValueError(f"qualities must be a non-empty list of {QUALITIES}, got {cfg.qualities}")
    if not cfg.roles or any(r not in ROLES for r in cfg.roles):
        raise ValueError(f"roles must be a non-empty list of {ROLES}, got {cfg.roles}")
    for key in ("episodes_per_task", "prompt_episodes"):
        value = getattr(cfg, key)
        if not _is_int(value) or not 1 <= value < SEED_STRIDE:
            raise ValueError(f"{key} must be a whole number in [1, {SEED_STRIDE - 1}], got {value!r}")
    for key, low in (("batch_size", 1), ("workers", 0), ("seed", 0), ("prompt_seed", 0)):
        value = getattr(cfg, key)
        if not _is_int(value) or value < low:
            raise ValueError(f"{key} must be a whole number >= {low}, got {value!r}")
    for key in ("action_noise", "prompt_action_noise"):
        value = getattr(cfg, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            raise ValueError(f"{key} must be a number >= 0, got {value!r}")
    if cfg.tasks is not None:
        tasks = list(cfg.tasks)
        bad = [t for t in tasks if not _is_int(t) or not 0 <= t < fam.num_tasks]
        if not tasks or bad or len(set(tasks)) < len(tasks):
            raise ValueError(f"tasks must be distinct tasks of {fam.name} in [0, {fam.num_tasks}), got {cfg.tasks}")
    elif fam.num_tasks < 1:
        raise ValueError(f"tasks: family {fam.name} has no tasks to collect")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def default_collect_config(family, **overrides) -> CollectConfig:
    """The family's collection settings (its data family's), with overrides."""
    fam = get_family(family)
    return resolve_config(CollectConfig(family=fam.dataset_family, **overrides))


# -- rollouts -----------------------------------------------------------------------------------


def rollout_batch(fam: TaskFamily, tasks: list[int], seeds: list[int], policy, rng,
                  goal_visible: bool = False) -> list[Trajectory]:  # fmt: skip
    """Run one episode per (task, seed) pair, all environments stepped together.

    Episodes that terminate early (ant falls) stop while the others go on. With
    `goal_visible`, Meta-World envs show the goal to the policy; the stored observations have it
    zeroed, as the agent sees them.
    """
    from promptdiff.envs.metaworld_ml1 import hide_goal

    kwargs = {"goal_visible": True} if goal_visible else {}
    envs = [make_env(fam, t, **kwargs) for t in tasks]
    n = len(envs)
    obs = np.stack([env.reset(seed=int(s))[0] for env, s in zip(envs, seeds)])
    buf = {k: [[] for _ in range(n)] for k in ("obs", "act", "rew", "term", "trunc", "succ")}
    for i in range(n):
        buf["obs"][i].append(obs[i])
    live = list(range(n))
    while live:
        actions = policy(obs[live], [envs[i] for i in live], rng)
        for j, i in enumerate(live):
            o, r, term, trunc, info = envs[i].step(actions[j])
            obs[i] = o
            buf["obs"][i].append(o)
            buf["act"][i].append(actions[j])
            buf["rew"][i].append(r)
            buf["term"][i].append(term)
            buf["trunc"][i].append(trunc)
            buf["succ"][i].append(bool(info.get("success", False)))
        live = [i for i in live if not (buf["term"][i][-1] or buf["trunc"][i][-1])]
    trajs = []
    for i, env in enumerate(envs):
        observations = np.asarray(buf["obs"][i], np.float32)
        if goal_visible:
            observations = hide_goal(observations)
        trajs.append(
            Trajectory(
                observations=observations,
                actions=np.asarray(buf["act"][i], np.float32),
                rewards=np.asarray(buf["rew"][i], np.float32),
                terminations=np.asarray(buf["term"][i], bool),
                truncations=np.asarray(buf["trunc"][i], bool),
                task_id=tasks[i],
                successes=np.asarray(buf["succ"][i], bool) if fam.has_success else None,
            )
        )
        env.close()
    return trajs


def _rollout_job(job):
    fam, tasks, seeds, policy, rng_seed, goal_visible = job
    return rollout_batch(fam, tasks, seeds, policy, np.random.default_rng(rng_seed), goal_visible)


def run_episodes(fam: TaskFamily, tasks: list[int], seeds: list[int], policy, rng_seed: list[int],
                 goal_visible: bool = False, batch_size: int = 25, workers: int = 1):  # fmt: skip
    """Yield the trajectories of one episode per (task, seed), in order, batch by batch.

    Batch b draws its action noise from the generator seeded with rng_seed + [b]; the batches are the
    same whatever the number of worker processes, and every process runs them single-threaded, so the
    data are too.
    """
    jobs = [(fam, tasks[i : i + batch_size], seeds[i : i + batch_size], policy, [*rng_seed, b], goal_visible)
            for b, i in enumerate(range(0, len(tasks), batch_size))]  # fmt: skip
    workers = max(1, min(workers or cpu_count(), len(jobs)))
    if workers == 1:
        with _one_thread():
            for job in jobs:
                yield _rollout_job(job)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_start_worker,
                               initargs=(os.getpid(),))  # fmt: skip
    with pool:
        yield from pool.map(_rollout_job, jobs)


@contextmanager
def _one_thread():
    """Torch single-threaded for the block (as in the workers), then as it was."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _start_worker(parent: int) -> None:
    """Pool initializer: die with the parent, act single-threaded, load the plugins (so that a family of
    one's own unpickles here too)."""
    die_with(parent)
    limit_threads(1)
    load_plugins()


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def make_policy(cfg: CollectConfig, quality: str, role: str):
    """The expert that writes a file of this quality; returns (policy, goal_visible)."""
    fam = get_family(cfg.family)
    if quality == "random":
        return RandomPolicy(), False
    if quality == "medium":
        if fam.expert != "learned" or not cfg.medium_policy:
            raise ValueError(f"{cfg.family}: 'medium' data needs a learned medium_policy")
        return LearnedExpert(fam, cfg.medium_policy, deterministic=role == "prompt" or not cfg.stochastic_train), False
    if fam.expert == "scripted":
        policy = scripted_expert(fam)
        noise = cfg.action_noise if role == "train" else cfg.prompt_action_noise
        return (NoisyPolicy(policy, noise) if noise > 0 else policy), bool(getattr(policy, "goal_visible", False))
    if not cfg.expert_policy:
        raise ValueError(f"{cfg.family}: 'expert_policy' must name the shipped expert actor file")
    deterministic = role == "prompt" or not cfg.stochastic_train
    return LearnedExpert(fam, cfg.expert_policy, deterministic=deterministic), False


def _episode_seed(base: int, task: int, episode: int) -> int:
    return base * 1_000_003 + task * SEED_STRIDE + episode


def collect_file(cfg: CollectConfig, role: str, quality: str, progress: tqdm | None = None) -> Path:
    """Write one file (role x quality) for every task; skip it if a valid one exists (one without episodes,
    which older versions wrote, is not valid)."""
    cfg = resolve_config(cfg)
    fam = get_family(cfg.family)
    path = dataset_path(fam.name, role, quality, cfg.root)
    if path.exists() and not cfg.overwrite:
        try:
            open_trajectories(path, family=fam.name, obs_dim=fam.obs_dim, role=role).close()
            if progress is not None:
                progress.update(_file_episodes(cfg, role))
            return path
        except DatasetError as err:
            print(f"regenerating {path}: {err.problem}")
    policy, goal_visible = make_policy(cfg, quality, role)
    tasks = list(range(fam.num_tasks)) if cfg.tasks is None else list(cfg.tasks)
    per_task = cfg.episodes_per_task if role == "train" else cfg.prompt_episodes
    base_seed = cfg.seed if role == "train" else cfg.prompt_seed
    pairs = [(t, e) for t in tasks for e in range(per_task)]
    if not pairs:
        raise ValueError(f"{path}: no episodes to collect ({len(tasks)} tasks x {per_task} episodes)")
    rng_seed = [base_seed, {"expert": 0, "medium": 1, "random": 2}[quality]]
    config = {**asdict(cfg), "role": role, "quality": quality}
    params = fam.task_params
    written = 0
    with TrajectoryWriter(path, family=fam.name, obs_dim=fam.obs_dim, act_dim=fam.act_dim, role=role,
                          quality=quality, expert=policy.name, seed=base_seed, config=config) as writer:  # fmt: skip
        batches = run_episodes(fam, [t for t, _ in pairs], [_episode_seed(base_seed, t, e) for t, e in pairs],
                               policy, rng_seed, goal_visible, cfg.batch_size, cfg.workers)  # fmt: skip
        for trajs in batches:
            for traj in trajs:
                writer.add(traj, task_param=params[traj.task_id], split=fam.split_of(traj.task_id))
            written += len(trajs)
            if progress is not None:
                progress.update(len(trajs))
        if written != len(pairs):  # raised inside the writer: the partial file is deleted, not renamed
            raise RuntimeError(f"{path}: {written} episodes collected of {len(pairs)}; the file is not written")
    return path


def _file_episodes(cfg: CollectConfig, role: str) -> int:
    fam = get_family(cfg.family)
    ntasks = fam.num_tasks if cfg.tasks is None else len(cfg.tasks)
    return ntasks * (cfg.episodes_per_task if role == "train" else cfg.prompt_episodes)


def collect(cfg: CollectConfig) -> list[Path]:
    """Collect every file of the config, then write the dataset card (when it has the training set).

    Settings are checked before anything is written. The family's folder is locked meanwhile: a second
    collection there waits, and `.partial` files found on the way in were left by an interrupted one and
    are removed."""
    cfg = resolve_config(cfg)
    fam = get_family(cfg.family)
    if fam.dataset_family != fam.name:
        raise ValueError(f"{fam.name} shares the data of {fam.dataset_family}: collect that family")
    with _collection_lock(Path(cfg.root) / fam.name):
        return _collect_locked(cfg)


def _collect_locked(cfg: CollectConfig) -> list[Path]:
    fam = get_family(cfg.family)
    _remove_partials(Path(cfg.root) / fam.name)
    jobs = [(role, q) for q in cfg.qualities for role in ("train", "prompt") if role in cfg.roles]
    total = sum(_file_episodes(cfg, role) for role, _ in jobs)
    start = time.time()
    paths = []
    with tqdm(total=total, desc=f"collect {fam.name}", unit="ep") as bar:
        for role, quality in jobs:
            bar.set_postfix_str(f"{role}-{quality}")
            paths.append(collect_file(cfg, role, quality, bar))
    if cfg.card and "train" in cfg.roles and "expert" in cfg.qualities:
        from promptdiff.production.cards import write_card

        write_card(cfg, wall_time=time.time() - start)
    elif "expert" in cfg.qualities:
        from promptdiff.production.cards import differs_from_card

        note = differs_from_card(fam, cfg.root)
        if note:
            print(f"promptdiff: warning: {note}", file=sys.stderr)
    return paths


@contextmanager
def _collection_lock(folder: Path, wait: bool = True):
    """Hold the folder's collection lock (creating the folder) for the block, and yield True. Another
    collection holding it is waited for; with `wait=False` the block gets False and holds nothing."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".collect.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            print(f"{folder}: waiting for another collection there to finish")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _remove_partials(folder: Path) -> None:
    """Delete the `.partial` files in folder; call it holding the folder's lock, when no write is under way."""
    for stale in sorted(folder.glob("*.h5.partial")):
        print(f"removing {stale}, left by an interrupted collection")
        stale.unlink(missing_ok=True)


def missing_files(family, files, root: str | Path = "datasets") -> list[tuple[str, str]]:
    """The (role, quality) pairs of `files` whose file does not exist under root for the family's data."""
    fam = get_family(family)
    return [(r, q) for r, q in dict.fromkeys(files) if not dataset_path(fam.dataset_family, r, q, root).exists()]


def ensure_files(family, files, root: str | Path = "datasets", **overrides) -> list[Path]:
    """Collect, with the family's default settings (and `overrides` of CollectConfig fields, e.g. expert_policy),
    just those of `files` ((role, quality) pairs) that are missing: the first-run convenience of the command line.
    Returns the paths written. Settings are checked before anything is written; `.partial` files that an
    interrupted collection left are removed (unless a collection is under way)."""
    fam = get_family(family)
    folder = Path(root) / fam.dataset_family
    missing = missing_files(fam, files, root)
    if not missing:
        if any(folder.glob("*.h5.partial")):
            with _collection_lock(folder, wait=False) as held:
                if held:
                    _remove_partials(folder)
        return []
    configs = {(role, quality): default_collect_config(fam.dataset_family, **{
        "root": str(root), "card": False, **overrides, "roles": [role], "qualities": [quality]})
        for role, quality in missing}  # fmt: skip
    # runs started together (benchmark cells) must not write the same file at once: one collects, the others
    # wait for it and then find the file there
    with _collection_lock(folder):
        written = []
        for role, quality in missing_files(fam, missing, root):
            print(f"{fam.dataset_family}: {role}-{quality}.h5 is missing under {root}: generating it from the "
                  f"family's expert ({fam.collect_command(role, quality, root)})")  # fmt: skip
            written += _collect_locked(configs[role, quality])
        return written
