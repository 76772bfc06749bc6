"""Evaluate a prompted decision transformer by rolling it out in a task family's environments.

`evaluate` runs every (task, episode) pair at once: one gymnasium vector env holds n =
len(tasks) * episodes environments (pair order: task-major, episode-minor), and every
environment step costs ONE batched policy call. `evaluate_sequential` plays the same episodes
one at a time with plain `make_env` environments; it is the reference that `evaluate` must
reproduce (same seeds, same prompts, same per-episode returns).

Seeding: episode e of task k is reset with `episode_seed(seed, k, e)`, which depends on nothing
else, so a result does not change with the set of tasks or episodes evaluated alongside it.

Early endings: gymnasium 1.x vector envs auto-reset an environment on the step AFTER the one
that ended its episode (AutoresetMode.NEXT_STEP). The evaluator marks an environment finished
as soon as it reports terminated or truncated, gives it zero actions from then on, and ignores
whatever it returns afterwards (its reset observation and the steps of its next episode). The
loop ends when every environment has finished; finished environments are still stepped by the
vector env meanwhile (cheap for the families here, and unavoidable with the vector API).

Result (a plain dict; task keys are ints), the schema every caller logs and writes (the rollout
callback's JSON files, the benchmark's cells):

    {"family", "tasks": {k: {"returns": [...], "lengths": [...], "successes": [...] (has_success),
                             "return_mean", "return_std", "normalised_score", "success_rate" (has_success)}},
     "return_mean", "score_mean", "success_mean" (has_success),
     "episodes", "n_envs", "env_steps", "policy_calls", "wall_time_s"}

normalised_score comes from the dataset card (`promptdiff.data.cards.ScoreCard`); it is None
(with one warning) when the card or the task is missing. The *_mean entries average over tasks;
score_mean is None if any task lacks a score. env_steps counts the steps of the evaluated
episodes only; policy_calls the batched calls. `summarise` builds this dict from per-episode
arrays, for `evaluate` and for the distributed rollout callback alike.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from promptdiff.envs import TaskFamily, get_family, make_env
from promptdiff.prompt import Prompt
from promptdiff.rollout.dt_policy import DTPolicy
from promptdiff.threads import in_worker


def episode_seed(seed: int, task: int, episode: int) -> int:
    """Reset seed of episode `episode` of task `task`, derived from (seed, task, episode) only."""
    return int(np.random.SeedSequence([int(seed), int(task), int(episode)]).generate_state(1)[0])


def _family(family: str | TaskFamily) -> TaskFamily:
    return get_family(family)


def _check_args(fam: TaskFamily, tasks, prompts, episodes) -> list[int]:
    tasks = [int(t) for t in tasks]
    if episodes < 1 or not tasks:
        raise ValueError("evaluate needs at least one task and one episode")
    missing = [t for t in tasks if t not in prompts]
    if missing:
        raise KeyError(f"{fam.name}: no prompt for tasks {missing}")
    for t in tasks:
        if prompts[t].batch_size != 1:
            raise ValueError(f"prompt of task {t} has P = {prompts[t].batch_size}, expected 1")
    return tasks


def _vector_env(fam: TaskFamily, tasks: list[int], vectorization: str) -> gym.vector.VectorEnv:
    """One vector env with one sub-environment per entry of `tasks` (repeats allowed)."""
    mode = gym.vector.AutoresetMode.NEXT_STEP
    if vectorization == "sync":
        return gym.vector.SyncVectorEnv([functools.partial(make_env, fam, t) for t in tasks], autoreset_mode=mode)
    if vectorization == "async":  # one worker process per environment, one thread each
        fns = [functools.partial(in_worker, make_env, fam, t) for t in tasks]
        return gym.vector.AsyncVectorEnv(fns, autoreset_mode=mode)
    raise ValueError(f"vectorization must be 'sync' or 'async', got {vectorization!r}")


def evaluate(policy: DTPolicy, family: str | TaskFamily, tasks: list[int], prompts: dict[int, Prompt],
             episodes: int, seed: int = 0, target_return: float | None = None,
             card_root: str | Path = "datasets", vectorization: str = "sync",
             episode_ids: list[int] | None = None, progress: str | None = None) -> dict:  # fmt: skip
    """Roll out `policy` for `episodes` episodes of each task, all environments stepped together.

    episode_ids: run these episode indices (and seeds) of each task instead of 0 .. episodes-1;
    distributed evaluation gives each rank its own share.
    prompts: task -> Prompt with P = 1 (env of task k is prompted with prompts[k]).
    target_return: the return-to-go each episode starts from (default: family.target_return).
    vectorization: "sync" (one process) or "async" (one worker process per environment).
    progress: show a progress bar over the episode's steps with this label (None: no bar).
    """
    start = time.perf_counter()
    fam = _family(family)
    tasks = _check_args(fam, tasks, prompts, episodes)
    target = fam.target_return if target_return is None else float(target_return)
    ids = list(range(episodes)) if episode_ids is None else [int(e) for e in episode_ids]
    pairs = [(t, e) for t in tasks for e in ids]
    n = len(pairs)

    envs = _vector_env(fam, [t for t, _ in pairs], vectorization)
    bar = tqdm(total=fam.horizon, desc=progress, unit="step", leave=False, dynamic_ncols=True,
               disable=progress is None)  # fmt: skip
    try:
        obs, _ = envs.reset(seed=[episode_seed(seed, t, e) for t, e in pairs])
        first = prompts[tasks[0]]
        policy.reset(type(first).cat([prompts[t] for t, _ in pairs]), np.full(n, target), horizon=fam.horizon)
        active = np.ones(n, bool)
        returns = np.zeros(n, np.float64)
        lengths = np.zeros(n, np.int64)
        success = np.zeros(n, bool)
        calls = 0
        while active.any():
            actions = policy.act(obs, active)
            obs, rewards, terminated, truncated, infos = envs.step(actions)
            calls += 1
            policy.record(rewards, active)
            returns[active] += rewards[active]
            lengths[active] += 1
            if fam.has_success and "success" in infos:
                success |= active & infos["_success"] & np.asarray(infos["success"], bool)
            active &= ~(terminated | truncated)
            bar.update(1)
            bar.set_postfix(running=f"{int(active.sum())}/{n}", refresh=False)
    finally:
        bar.close()
        envs.close()
    return summarise(fam, tasks, len(ids), returns, lengths, success, calls, card_root,
                     time.perf_counter() - start)  # fmt: skip


def evaluate_sequential(policy: DTPolicy, family: str | TaskFamily, tasks: list[int],
                        prompts: dict[int, Prompt], episodes: int, seed: int = 0,
                        target_return: float | None = None, card_root: str | Path = "datasets",
                        vectorization: str = "sync") -> dict:  # fmt: skip
    """The same evaluation as `evaluate`, one episode at a time (policy calls with n = 1).

    The reference implementation: plain `make_env` environments, no vector env, no batching.
    `vectorization` is accepted for a matching signature and ignored.
    """
    start = time.perf_counter()
    fam = _family(family)
    tasks = _check_args(fam, tasks, prompts, episodes)
    target = fam.target_return if target_return is None else float(target_return)
    pairs = [(t, e) for t in tasks for e in range(episodes)]
    returns = np.zeros(len(pairs), np.float64)
    lengths = np.zeros(len(pairs), np.int64)
    success = np.zeros(len(pairs), bool)
    one = np.ones(1, bool)
    for i, (t, e) in enumerate(pairs):
        env = make_env(fam, t)
        try:
            obs, _ = env.reset(seed=episode_seed(seed, t, e))
            policy.reset(prompts[t], np.full(1, target), horizon=fam.horizon)
            done = False
            while not done:
                action = policy.act(obs[None], one)[0]
                obs, reward, terminated, truncated, info = env.step(action)
                policy.record(np.array([reward]), one)
                returns[i] += reward
                lengths[i] += 1
                success[i] |= bool(info.get("success", False))
                done = terminated or truncated
        finally:
            env.close()
    return summarise(fam, tasks, episodes, returns, lengths, success, int(lengths.sum()), card_root,
                     time.perf_counter() - start)  # fmt: skip


# -- the result ---------------------------------------------------------------------------------


def summarise(family, tasks: list[int], episodes: int, returns: np.ndarray, lengths: np.ndarray,
              success: np.ndarray, calls: int, card_root, wall_time: float) -> dict:  # fmt: skip
    """The result dict (module docstring) from per-episode arrays (len(tasks) * episodes,), task-major.
    `card_root`: the dataset root whose card scores the returns (or a ready `ScoreCard`)."""
    from promptdiff.data.cards import ScoreCard  # lazy: the card is the only thing read from the data layer

    fam = _family(family)
    card = card_root if isinstance(card_root, ScoreCard) else ScoreCard(fam, card_root)
    returns, lengths = np.asarray(returns, np.float64), np.asarray(lengths, np.int64)
    success = np.asarray(success, bool)
    per_task = {}
    for j, t in enumerate(tasks):
        sl = slice(j * episodes, (j + 1) * episodes)
        r = returns[sl]
        entry = {"returns": r.tolist(), "lengths": lengths[sl].tolist(), "return_mean": float(r.mean()),
                 "return_std": float(r.std()), "normalised_score": card.score(t, float(r.mean()))}  # fmt: skip
        if fam.has_success:
            entry["successes"] = success[sl].tolist()
            entry["success_rate"] = float(success[sl].mean())
        per_task[t] = entry
    norm = [v["normalised_score"] for v in per_task.values()]
    out = {
        "family": fam.name,
        "tasks": per_task,
        "return_mean": float(np.mean([v["return_mean"] for v in per_task.values()])),
        "score_mean": None if any(s is None for s in norm) else float(np.mean(norm)),
    }
    if fam.has_success:
        out["success_mean"] = float(np.mean([v["success_rate"] for v in per_task.values()]))
    out.update(episodes=episodes, n_envs=len(returns), env_steps=int(lengths.sum()), policy_calls=int(calls),
               wall_time_s=float(wall_time))  # fmt: skip
    return out


def migrate_result(result: dict) -> dict:
    """A rollout result written before the key names were unified (mean_return, mean_normalised_score,
    mean_success_rate), with today's names (return_mean, score_mean, success_mean); today's pass unchanged."""
    renames = {"mean_return": "return_mean", "mean_normalised_score": "score_mean", "mean_success_rate": "success_mean"}
    out = {renames.get(k, k): v for k, v in result.items()}
    if "sets" in out:
        out["sets"] = {name: migrate_result(s) for name, s in out["sets"].items()}
    return out
