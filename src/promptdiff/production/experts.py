"""Experts that produce the datasets: scripted (point robot, Meta-World) and learned (PPO actors).

Every expert is a `BatchPolicy`: it acts for a batch of environments at once, given their raw
observations and the environments themselves (so it can read the task parameter or the goal,
which the stored observation never contains).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol

import numpy as np
from torch import nn

from promptdiff.production.expert_policy import load_expert_actor


def scripted_expert(family) -> "BatchPolicy":
    """The family's scripted expert: its `scripted_policy` ("module:Class"), constructed with the family."""
    import importlib

    if not family.scripted_policy:
        raise ValueError(f"family {family.name} has a scripted expert but names no scripted_policy "
                         f"('module:Class' of a BatchPolicy)")  # fmt: skip
    module, _, name = family.scripted_policy.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"family {family.name}: scripted_policy {family.scripted_policy!r} cannot be imported "
                         f"({err})") from err  # fmt: skip
    return cls(family)


class BatchPolicy(Protocol):
    name: str
    goal_visible: bool  # optional (default False): the envs are built with goal_visible=True (Meta-World)

    def __call__(self, obs: np.ndarray, envs: list, rng: np.random.Generator) -> np.ndarray:
        """obs (B, obs_dim) -> actions (B, act_dim)."""


class RandomPolicy:
    """Uniform random actions inside each env's action box."""

    name = "random"

    def __call__(self, obs, envs, rng):
        spaces = [env.action_space for env in envs]
        return np.stack([rng.uniform(s.low, s.high).astype(np.float32) for s in spaces])


class PointRobotExpert:
    """Steps straight at the goal, as far as the action box allows."""

    name = "scripted:point_robot"

    def __init__(self, family=None):
        del family  # every point-robot family's goal is on the env

    def __call__(self, obs, envs, rng):
        from promptdiff.envs.point_robot import point_robot_expert

        goals = np.stack([env.unwrapped.goal for env in envs])
        return point_robot_expert(obs, goals)


class NoisyPolicy:
    """Adds Gaussian noise (std relative to the action range's half width) to a scripted expert.

    Scripted experts and the point robot's / Meta-World's resets are deterministic, so without
    noise every episode of a task would be the same; the expert corrects the perturbations.
    """

    def __init__(self, policy, std: float):
        self.policy, self.std = policy, float(std)
        self.name = f"{policy.name} + gaussian action noise (std {std:g} of the half range)"

    def __call__(self, obs, envs, rng):
        actions = np.asarray(self.policy(obs, envs, rng), dtype=np.float64)
        low = np.stack([env.action_space.low for env in envs])
        high = np.stack([env.action_space.high for env in envs])
        noisy = actions + self.std * (high - low) / 2 * rng.standard_normal(actions.shape)
        return np.clip(noisy, low, high).astype(np.float32)


class MetaWorldExpert:
    """Meta-World's scripted policy; needs the goal-visible observation (envs built goal_visible)."""

    goal_visible = True

    def __init__(self, family):
        from metaworld import policies

        metaworld_name = family.metaworld_name
        classes = {"reach-v3": policies.SawyerReachV3Policy, "pick-place-v3": policies.SawyerPickPlaceV3Policy}
        if metaworld_name not in classes:
            raise ValueError(f"no scripted Meta-World expert for {metaworld_name!r}")
        self._policy = classes[metaworld_name]()
        self.name = f"scripted:metaworld.policies.{type(self._policy).__name__}"

    def __call__(self, obs, envs, rng):
        return np.clip(np.stack([self._policy.get_action(o) for o in obs]), -1.0, 1.0).astype(np.float32)


class LearnedExpert:
    """A shipped PPO actor; its input is the observation plus the task features.

    Collected data must come out the same whatever the batching, the worker and thread counts and the
    CPU's BLAS kernels: the ant's and the cheetah's dynamics amplify a last-bit difference in one
    action into a different episode. A float32 matrix product rounds differently with the batch's
    size, the row's position in it and the CPU (MKL picks kernels by all three), so the actor is run
    here in float64 with elementwise operations in one fixed order (`_rowwise_linear`): each row's
    actions are a function of that row alone, and of no library's choice of kernel.
    """

    def __init__(self, family, path: str | Path, deterministic: bool = True):
        if family.task_features is None:
            raise ValueError(f"family {family.name} has no task_features: it cannot drive a learned expert")
        self.family = family
        self.actor = load_expert_actor(path)
        self.deterministic = deterministic
        mode = "mean" if deterministic else "sampled"
        self.name = f"ppo:{Path(path).name} ({mode} actions)"
        self._net = None  # float64 copies of the actor's tensors, made on first use (also in a worker)

    def __getstate__(self):
        return {**self.__dict__, "_net": None}

    def _arrays(self) -> dict:
        if self._net is None:
            a = self.actor
            as64 = lambda t: t.detach().cpu().numpy().astype(np.float64)  # noqa: E731
            linears = [m for m in a.body if isinstance(m, nn.Linear)] + [a.mean]
            self._net = {
                "layers": [(as64(m.weight).T.copy(), as64(m.bias)) for m in linears],
                "mean": as64(a.obs_mean), "scale": np.sqrt(as64(a.obs_var) + float(a.obs_eps)),
                "clip": float(a.obs_clip),
                # math.exp, not np.exp: numpy's vectorised exp rounds differently on AVX-512 and AVX2
                "std": np.array([math.exp(v) for v in as64(a.log_std)]),
            }  # fmt: skip
        return self._net

    def mean_action(self, inputs: np.ndarray) -> np.ndarray:
        """inputs (B, obs_dim + features) -> the Gaussian's mean (B, act_dim), float64, row by row."""
        net = self._arrays()
        h = np.clip((np.asarray(inputs, np.float64) - net["mean"]) / net["scale"], -net["clip"], net["clip"])
        *hidden, last = net["layers"]
        for weight_t, bias in hidden:
            h = np.tanh(_rowwise_linear(h, weight_t, bias))
        return _rowwise_linear(h, *last)

    def __call__(self, obs, envs, rng):
        feats = np.stack([self.family.task_features(env.unwrapped.task_param) for env in envs])
        action = self.mean_action(np.concatenate([obs, feats], axis=1))
        if not self.deterministic:
            action = action + self._arrays()["std"] * rng.standard_normal(action.shape)
        return np.clip(action, -1.0, 1.0)


def _rowwise_linear(x: np.ndarray, weight_t: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """x (B, n_in) @ weight_t (n_in, n_out) + bias, each output summed over the inputs in order 0, 1, ...

    Only elementwise multiplications and additions (exact IEEE operations, never fused): the result is
    the same on every CPU and for every batch that contains the row.
    """
    out = np.repeat(bias[None, :], x.shape[0], axis=0)
    for k in range(x.shape[1]):
        out += x[:, k : k + 1] * weight_t[k]
    return out
