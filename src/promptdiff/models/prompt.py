"""The prompt interface of the Prompt Decision Transformer (PLM).

Every method feeds the frozen PLM through this one structure, so that an expert prompt, a
generated prompt and a tuned prompt reach the model in exactly the same form.

A prompt is a short trajectory segment of length L (5 by default), in the PLM's units:

    states         (P, L, obs_dim)  float   (s - state_mean) / state_std, training-task statistics
    actions        (P, L, act_dim)  float   raw actions in [-1, 1]
    returns_to_go  (P, L, 1)        float   return-to-go divided by the family's rtg_scale
    timesteps      (P, L)           long    absolute step index within the episode
    mask           (P, L)           float   1 for real steps, 0 for left padding

P is either the batch size B of the segments it prompts (one prompt per sample) or 1 (one
prompt for the whole batch, broadcast). Shorter segments are LEFT-padded to L with state 0,
action ACTION_PAD, return-to-go 0, timestep 0 and mask 0.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

ACTION_PAD = -10.0


@dataclass
class Prompt:
    states: torch.Tensor
    actions: torch.Tensor
    returns_to_go: torch.Tensor
    timesteps: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self) -> None:
        P, L = self.states.shape[:2]
        expected = {"actions": 3, "returns_to_go": 3, "timesteps": 2, "mask": 2}
        for name, ndim in expected.items():
            t = getattr(self, name)
            if t.dim() != ndim or tuple(t.shape[:2]) != (P, L):
                raise ValueError(f"prompt.{name} has shape {tuple(t.shape)}, expected ({P}, {L}, ...)")
        if self.returns_to_go.shape[-1] != 1:
            raise ValueError(f"prompt.returns_to_go must end in 1, got {tuple(self.returns_to_go.shape)}")

    @property
    def length(self) -> int:
        return int(self.states.shape[1])

    @property
    def batch_size(self) -> int:
        return int(self.states.shape[0])

    def expand(self, batch_size: int) -> "Prompt":
        """Broadcast a single prompt (P = 1) to `batch_size` samples; P = batch_size passes."""
        if self.batch_size == batch_size:
            return self
        if self.batch_size != 1:
            raise ValueError(f"a prompt for {self.batch_size} samples cannot prompt a batch of {batch_size}")
        return Prompt(*(getattr(self, f.name).expand(batch_size, *getattr(self, f.name).shape[1:]) for f in fields(self)))

    def to(self, device) -> "Prompt":
        return Prompt(*(getattr(self, f.name).to(device) for f in fields(self)))

    def index(self, idx) -> "Prompt":
        """Select prompts (rows) by index."""
        return Prompt(*(getattr(self, f.name)[idx] for f in fields(self)))

    @staticmethod
    def cat(prompts: list["Prompt"]) -> "Prompt":
        return Prompt(*(torch.cat([getattr(p, f.name) for p in prompts]) for f in fields(Prompt)))
