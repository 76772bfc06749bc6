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
"""

from __future__ import annotations

import time
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
    """Environments stepped together (one batched policy call per step)."""
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
    if not out.qualities or any(q not in QUALITIES for q in out.qualities):
        raise ValueError(f"qualities must be a non-empty list of {QUALITIES}, got {out.qualities}")
    if not out.roles or any(r not in ROLES for r in out.roles):
        raise ValueError(f"roles must be a non-empty list of {ROLES}, got {out.roles}")
    for key in ("episodes_per_task", "prompt_episodes"):
        if int(getattr(out, key)) < 1:
            raise ValueError(f"{key} must be >= 1, got {getattr(out, key)}")
    if out.tasks is not None:
        bad = sorted(t for t in out.tasks if not 0 <= int(t) < fam.num_tasks)
        if not out.tasks or bad:
            raise ValueError(f"tasks must name tasks of {fam.name} in [0, {fam.num_tasks}), got {out.tasks}")
    return out


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

    Batch b draws its action noise from the generator seeded with rng_seed + [b], so the data
    are the same whatever the number of worker processes.
    """
    jobs = [(fam, tasks[i : i + batch_size], seeds[i : i + batch_size], policy, [*rng_seed, b], goal_visible)
            for b, i in enumerate(range(0, len(tasks), batch_size))]  # fmt: skip
    workers = max(1, min(workers or cpu_count(), len(jobs)))
    if workers == 1:
        for job in jobs:
            yield _rollout_job(job)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # the workers load the same plugins first, so a family of one's own unpickles there too
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=load_plugins) as pool:
        yield from pool.map(_rollout_job, jobs)


def cpu_count() -> int:
    import os

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
    return base * 1_000_003 + task * 1_009 + episode


def collect_file(cfg: CollectConfig, role: str, quality: str, progress: tqdm | None = None) -> Path:
    """Write one file (role x quality) for every task; skip it if a valid one exists."""
    fam = get_family(cfg.family)
    path = dataset_path(fam.name, role, quality, cfg.root)
    stale = partial_path(path)
    if stale.exists():  # a leftover from an interrupted run
        print(f"removing {stale}, left by an interrupted collection")
        stale.unlink()
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
    rng_seed = [base_seed, {"expert": 0, "medium": 1, "random": 2}[quality]]
    config = {**asdict(cfg), "role": role, "quality": quality}
    params = fam.task_params
    with TrajectoryWriter(path, family=fam.name, obs_dim=fam.obs_dim, act_dim=fam.act_dim, role=role,
                          quality=quality, expert=policy.name, seed=base_seed, config=config) as writer:  # fmt: skip
        batches = run_episodes(fam, [t for t, _ in pairs], [_episode_seed(base_seed, t, e) for t, e in pairs],
                               policy, rng_seed, goal_visible, cfg.batch_size, cfg.workers)  # fmt: skip
        for trajs in batches:
            for traj in trajs:
                writer.add(traj, task_param=params[traj.task_id], split=fam.split_of(traj.task_id))
            if progress is not None:
                progress.update(len(trajs))
    return path


def _file_episodes(cfg: CollectConfig, role: str) -> int:
    fam = get_family(cfg.family)
    ntasks = fam.num_tasks if cfg.tasks is None else len(cfg.tasks)
    return ntasks * (cfg.episodes_per_task if role == "train" else cfg.prompt_episodes)


def collect(cfg: CollectConfig) -> list[Path]:
    """Collect every file of the config, then write the dataset card (when it has the training set)."""
    fam = get_family(cfg.family)
    if fam.dataset_family != fam.name:
        raise ValueError(f"{fam.name} shares the data of {fam.dataset_family}: collect that family")
    cfg = resolve_config(cfg)
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
    return paths


def missing_files(family, files, root: str | Path = "datasets") -> list[tuple[str, str]]:
    """The (role, quality) pairs of `files` whose file does not exist under root for the family's data."""
    fam = get_family(family)
    return [(r, q) for r, q in dict.fromkeys(files) if not dataset_path(fam.dataset_family, r, q, root).exists()]


def ensure_files(family, files, root: str | Path = "datasets", **overrides) -> list[Path]:
    """Collect, with the family's default settings (and `overrides` of CollectConfig fields, e.g. expert_policy),
    just those of `files` ((role, quality) pairs) that are missing: the first-run convenience of the command line.
    Returns the paths written."""
    import fcntl

    fam = get_family(family)
    if not missing_files(fam, files, root):
        return []
    folder = Path(root) / fam.dataset_family
    folder.mkdir(parents=True, exist_ok=True)
    # runs started together (benchmark cells) must not write the same file at once: one collects, the others
    # wait for it and then find the file there
    with open(folder / ".collect.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _collect_missing(fam, files, root, overrides)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _collect_missing(fam: TaskFamily, files, root, overrides: dict) -> list[Path]:
    missing = missing_files(fam, files, root)
    written = []
    for role, quality in missing:
        print(f"{fam.dataset_family}: {role}-{quality}.h5 is missing under {root}: generating it from the "
              f"family's expert ({fam.collect_command(role, quality, root)})")  # fmt: skip
        cfg = default_collect_config(fam.dataset_family, **{"root": str(root), "card": False, **overrides,
                                                            "roles": [role], "qualities": [quality]})  # fmt: skip
        written += collect(cfg)
    return written
