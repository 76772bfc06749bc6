"""Shipped expert policies: a small torch actor exported from a stable-baselines3 PPO policy.

The exported file (`datasets/<family>/expert_policy.pt`) holds plain tensors: the actor MLP,
the Gaussian log-std and the observation-normalisation statistics of SB3's VecNormalize. It
is loaded with `promptdiff.safe_io.load_checkpoint` (no pickled code) and runs batched, so data
collection needs neither SB3 nor its zip format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from promptdiff.safe_io import load_checkpoint


class ExpertActor(nn.Module):
    """Observation (with task features) -> action; tanh MLP as in SB3's default PPO actor."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (256, 256)):
        super().__init__()
        layers: list[nn.Module] = []
        width = obs_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.Tanh()]
            width = h
        self.body = nn.Sequential(*layers)
        self.mean = nn.Linear(width, act_dim)
        self.log_std = nn.Parameter(torch.zeros(act_dim))
        self.register_buffer("obs_mean", torch.zeros(obs_dim, dtype=torch.float64))
        self.register_buffer("obs_var", torch.ones(obs_dim, dtype=torch.float64))
        self.register_buffer("obs_clip", torch.tensor(10.0, dtype=torch.float64))
        self.register_buffer("obs_eps", torch.tensor(1e-8, dtype=torch.float64))
        self.hidden = tuple(hidden)

    def normalise(self, obs: torch.Tensor) -> torch.Tensor:
        z = (obs.double() - self.obs_mean) / torch.sqrt(self.obs_var + self.obs_eps)
        return z.clamp(-self.obs_clip, self.obs_clip).float()

    @torch.no_grad()
    def act(
        self, obs: np.ndarray, deterministic: bool = True, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """obs (B, obs_dim) float -> actions (B, act_dim) in [-1, 1]."""
        mean = self.mean(self.body(self.normalise(torch.as_tensor(obs))))
        action = mean.numpy().astype(np.float64)
        if not deterministic:
            rng = rng or np.random.default_rng()
            std = np.exp(self.log_std.numpy().astype(np.float64))
            action = action + std * rng.standard_normal(action.shape)
        return np.clip(action, -1.0, 1.0)


def export_sb3_policy(model, vec_normalize, path: str | Path) -> Path:
    """Write a trained SB3 PPO policy (+ VecNormalize statistics) as an ExpertActor file."""
    policy = model.policy
    linears = [m for m in policy.mlp_extractor.policy_net if isinstance(m, nn.Linear)]
    obs_dim = linears[0].in_features
    act_dim = policy.action_net.out_features
    actor = ExpertActor(obs_dim, act_dim, tuple(m.out_features for m in linears))
    body = [m for m in actor.body if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for dst, src in zip(body, linears):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
        actor.mean.weight.copy_(policy.action_net.weight)
        actor.mean.bias.copy_(policy.action_net.bias)
        actor.log_std.copy_(policy.log_std)
        actor.obs_mean.copy_(torch.as_tensor(vec_normalize.obs_rms.mean))
        actor.obs_var.copy_(torch.as_tensor(vec_normalize.obs_rms.var))
        actor.obs_clip.fill_(float(vec_normalize.clip_obs))
        actor.obs_eps.fill_(float(vec_normalize.epsilon))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"hidden": actor.hidden, "state_dict": actor.state_dict()}, tmp)
    tmp.replace(path)
    return path


def load_expert_actor(path: str | Path) -> ExpertActor:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"expert policy file not found: {path}")
    blob = load_checkpoint(path, what="expert policy file")  # refuses pickled code before anything else
    try:
        state = blob["state_dict"]
        obs_dim = state["body.0.weight"].shape[1]
        act_dim = state["mean.weight"].shape[0]
        actor = ExpertActor(obs_dim, act_dim, tuple(blob["hidden"]))
        actor.load_state_dict(state)
    except Exception as err:  # noqa: BLE001 - re-raised with the file named
        raise ValueError(f"{path}: not a promptdiff expert policy file ({err})") from None
    return actor.eval()
