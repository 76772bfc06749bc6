"""Experts that produce the datasets: scripted (point robot, Meta-World) and learned (PPO actors).

Every expert is a `BatchPolicy`: it acts for a batch of environments at once, given their raw
observations and the environments themselves (so it can read the task parameter or the goal,
which the stored observation never contains).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from promptdiff.data.expert_policy import load_expert_actor
from promptdiff.data.task_conditioning import task_features


class BatchPolicy(Protocol):
    name: str

    def __call__(self, obs: np.ndarray, envs: list, rng: np.random.Generator) -> np.ndarray:
        """obs (B, obs_dim) -> actions (B, act_dim)."""


class RandomPolicy:
    """Uniform random actions inside each env's action box."""

    name = "random"

    def __call__(self, obs, envs, rng):
        spaces = [env.action_space for env in envs]
        return np.stack([rng.uniform(s.low, s.high).astype(np.float32) for s in spaces])


class PointRobotExpert:
    """Steps straight at the goal; `noise` adds Gaussian action noise (the expert corrects it)."""

    def __init__(self, noise: float = 0.0):
        self.noise = float(noise)
        self.name = "scripted:point_robot" + (f" (action noise std {noise})" if noise else "")

    def __call__(self, obs, envs, rng):
        from promptdiff.envs.point_robot import MAX_STEP, point_robot_expert

        goals = np.stack([env.unwrapped.goal for env in envs])
        actions = point_robot_expert(obs, goals)
        if self.noise:
            actions = actions + self.noise * rng.standard_normal(actions.shape)
        return np.clip(actions, -MAX_STEP, MAX_STEP).astype(np.float32)


class MetaWorldExpert:
    """Meta-World's scripted policy; needs the goal-visible observation (envs built goal_visible)."""

    def __init__(self, metaworld_name: str):
        from metaworld import policies

        classes = {"reach-v3": policies.SawyerReachV3Policy, "pick-place-v3": policies.SawyerPickPlaceV3Policy}
        if metaworld_name not in classes:
            raise ValueError(f"no scripted Meta-World expert for {metaworld_name!r}")
        self._policy = classes[metaworld_name]()
        self.name = f"scripted:metaworld.policies.{type(self._policy).__name__}"

    def __call__(self, obs, envs, rng):
        return np.stack([self._policy.get_action(o) for o in obs]).astype(np.float32)


class LearnedExpert:
    """A shipped PPO actor; its input is the observation plus the task features."""

    def __init__(self, family: str, path: str | Path, deterministic: bool = True):
        self.family = family
        self.actor = load_expert_actor(path)
        self.deterministic = deterministic
        mode = "mean" if deterministic else "sampled"
        self.name = f"ppo:{Path(path).name} ({mode} actions)"

    def __call__(self, obs, envs, rng):
        feats = np.stack([task_features(self.family, env.unwrapped.task_param) for env in envs])
        return self.actor.act(np.concatenate([obs, feats], axis=1), self.deterministic, rng)
