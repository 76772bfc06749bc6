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


def task_features(family, param) -> np.ndarray:
    """Encode a task parameter for the family's learned expert (the family's `task_features`)."""
    fam = get_family(family)
    if fam.task_features is None:
        raise ValueError(f"family {fam.name!r} has no learned expert (no task_features)")
    return fam.task_features(param)


def sample_task_param(family, rng: np.random.Generator) -> np.ndarray:
    """Draw a training task for the expert (the family's `sample_task_param`)."""
    fam = get_family(family)
    if fam.sample_task_param is None:
        raise ValueError(f"family {fam.name!r} has no learned expert (no sample_task_param)")
    return fam.sample_task_param(rng)


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
