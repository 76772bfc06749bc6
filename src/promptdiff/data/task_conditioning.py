"""Task-conditioned observations for learned experts.

A learned expert for a MuJoCo family is one policy for all tasks: the task parameter, encoded
below, is appended to its observation. This is for the expert only; the datasets store the
environment's own observation, from which the task cannot be read.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from promptdiff.envs import get_family, make_env


def task_features(family: str, param) -> np.ndarray:
    """Encode a task parameter for the expert: (cos g, sin g), v*, or the direction."""
    param = np.asarray(param, dtype=np.float64).reshape(-1)
    if family in ("ant_dir", "ant_dir_ood"):
        return np.array([np.cos(param[0]), np.sin(param[0])])
    if family in ("cheetah_vel", "cheetah_dir"):
        return param[:1].copy()
    raise ValueError(f"family {family!r} has no learned expert")


def sample_task_param(family: str, rng: np.random.Generator) -> np.ndarray:
    """Draw a training task for the expert: any angle, any velocity in range, either direction."""
    if family == "ant_dir":
        return np.array([rng.uniform(0.0, 2 * np.pi)])
    if family == "cheetah_vel":
        return np.array([rng.uniform(0.075, 3.0)])
    if family == "cheetah_dir":
        return np.array([rng.choice([-1.0, 1.0])])
    raise ValueError(f"family {family!r} has no learned expert")


class TaskConditionedEnv(gym.Wrapper):
    """Appends task features to the observation; optionally redraws the task every reset."""

    def __init__(self, env: gym.Env, family: str, random_tasks: bool = False):
        super().__init__(env)
        self.family = family
        self.random_tasks = random_tasks
        extra = task_features(family, env.unwrapped.task_param).shape[0]
        dim = env.observation_space.shape[0] + extra
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(dim,), dtype=np.float64)

    def _augment(self, obs):
        feats = task_features(self.family, self.env.unwrapped.task_param)
        return np.concatenate([obs, feats])

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self._task_rng = np.random.default_rng(seed + 7_919)
        if self.random_tasks:
            rng = getattr(self, "_task_rng", None) or np.random.default_rng()
            self._task_rng = rng
            self.env.unwrapped.set_task_param(sample_task_param(self.family, rng))
        obs, info = self.env.reset(seed=seed, options=options)
        return self._augment(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._augment(obs), reward, terminated, truncated, info


def make_conditioned_env(family: str, task: int = 0, random_tasks: bool = False) -> gym.Env:
    fam = get_family(family)
    return TaskConditionedEnv(make_env(fam, task), fam.name, random_tasks=random_tasks)
