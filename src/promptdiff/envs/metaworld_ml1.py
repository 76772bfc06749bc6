"""Meta-World ML1 task families (metaworld 3.x, v3 tasks): one fixed task per environment.

Task i is `metaworld.ML1(<name>, seed=1).train_tasks[i]`, pinned with `set_task`, so the goal
and object positions are the same in every episode. The observation (39,) has its goal part
(last 3 entries) zeroed: the task is identifiable only through a prompt. `goal_visible=True`
builds the goal-visible copy that Meta-World's scripted experts need; promptdiff stores the
goal-hidden observation of such rollouts. Episodes last 500 steps; `info["success"]` is
Meta-World's success flag.
"""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from promptdiff.envs.families import get_family

ML1_SEED = 1
GOAL_SLICE = slice(36, 39)


@functools.lru_cache(maxsize=4)
def ml1_benchmark(env_name: str):
    """Build (once per process) Meta-World's ML1 benchmark that defines the 50 tasks."""
    import metaworld

    return metaworld.ML1(env_name, seed=ML1_SEED)


class ML1Env(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}
    family_name: str = ""

    def __init__(self, task: int = 0, goal_visible: bool = False, render_mode: str | None = None):
        family = get_family(self.family_name)
        if not 0 <= int(task) < family.num_tasks:
            raise ValueError(f"{self.family_name}: task {task} out of range [0, {family.num_tasks})")
        self.task = int(task)
        self.goal_visible = bool(goal_visible)
        benchmark = ml1_benchmark(family.metaworld_name)
        self._env = benchmark.train_classes[family.metaworld_name](render_mode=render_mode)
        self._env.set_task(benchmark.train_tasks[self.task])
        self._env._partially_observable = not self.goal_visible
        # Meta-World clips observations to a cached space computed for the old observability.
        self._env.__dict__.pop("sawyer_observation_space", None)
        self._env.reset()  # Meta-World places the goal (and objects) only when it resets
        self.task_param = np.asarray(self._env._target_pos, dtype=np.float64).copy()
        self.render_mode = render_mode
        self.action_space = spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(39,), dtype=np.float64)

    @property
    def goal(self) -> np.ndarray:
        return np.asarray(self._env._target_pos, dtype=np.float64).copy()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs, info = self._env.reset(seed=seed)
        return np.asarray(obs, dtype=np.float64), info

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        obs, reward, terminated, truncated, info = self._env.step(action)
        info = dict(info)
        info["success"] = bool(info.get("success", 0.0))
        return np.asarray(obs, dtype=np.float64), float(reward), bool(terminated), bool(truncated), info

    def render(self):
        return self._env.render()

    def close(self):
        self._env.close()


class ML1ReachEnv(ML1Env):
    family_name = "ml1_reach"


class ML1PickPlaceEnv(ML1Env):
    family_name = "ml1_pick_place"


def hide_goal(observation: np.ndarray) -> np.ndarray:
    """Zero the goal entries of a (..., 39) Meta-World observation (what the agent sees)."""
    hidden = np.array(observation, copy=True)
    hidden[..., GOAL_SLICE] = 0.0
    return hidden
