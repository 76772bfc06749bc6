"""Trajectory reconstruction: between the diffuser's flat vector x0 and the PLM's `Prompt`.

The diffuser generates a prompt segment of L steps as one flat vector

    x0 (N, L * (obs_dim + act_dim + 1)) = flatten over steps of [state_t, action_t, reward_t]

in the PLM's units: states normalised with the PLM's statistics, raw actions, rewards divided
by the family's rtg_scale. Its condition y is the segment's returns-to-go (N, L) (divided by
rtg_scale) and timesteps (N, L). `to_prompt` builds the PLM's prompt from the two: states and
actions from x0, returns-to-go and timesteps from y; the generated rewards are dropped (the PLM
has no reward slot); every step is real (mask 1).
"""

from __future__ import annotations

import torch

from promptdiff.prompt import Prompt


class PromptCodec:
    def __init__(self, obs_dim: int, act_dim: int, prompt_length: int = 5):
        self.obs_dim, self.act_dim, self.L = int(obs_dim), int(act_dim), int(prompt_length)
        self.step_dim = self.obs_dim + self.act_dim + 1

    @property
    def x_dim(self) -> int:
        return self.L * self.step_dim

    def encode(self, states: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
        """states (..., L, obs_dim), actions (..., L, act_dim), rewards (..., L) -> x0 (..., x_dim)."""
        x = torch.cat([states, actions, rewards.unsqueeze(-1)], dim=-1)
        if x.shape[-2:] != (self.L, self.step_dim):
            raise ValueError(f"windows of shape {tuple(x.shape[-2:])} do not match (L={self.L}, {self.step_dim})")
        return x.flatten(-2)

    def decode(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x0 (..., x_dim) -> states (..., L, obs_dim), actions (..., L, act_dim), rewards (..., L)."""
        if x0.shape[-1] != self.x_dim:
            raise ValueError(f"x0 has {x0.shape[-1]} features, expected {self.x_dim}")
        x = x0.unflatten(-1, (self.L, self.step_dim))
        o, a = self.obs_dim, self.act_dim
        return x[..., :o], x[..., o:o + a], x[..., o + a]

    def to_prompt(self, x0: torch.Tensor, returns_to_go: torch.Tensor, timesteps: torch.Tensor) -> Prompt:
        """The PLM prompt (P = N) from x0 (N, x_dim) and y = (returns_to_go (N, L), timesteps (N, L)).

        Differentiable in x0, so a loss on the PLM's output reaches whatever produced x0.
        """
        states, actions, _ = self.decode(x0)
        return Prompt(states=states, actions=actions, returns_to_go=returns_to_go.unsqueeze(-1).to(x0.dtype),
                      timesteps=timesteps.long(), mask=torch.ones(timesteps.shape, dtype=x0.dtype, device=x0.device))  # fmt: skip
