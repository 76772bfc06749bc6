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
action ACTION_PAD, return-to-go 0, timestep 0 and mask 0. A prompt whose mask is all 0 is no
prompt at all: the PLM's attention never sees it (`Prompt.empty`).

Soft-prompt methods tune the prompt after the PLM's prompt embedding: `PromptTokens` holds the
3 L embedded tokens (return-to-go, state, action per step) directly and goes wherever a `Prompt`
goes (the PLM's forward, the rollout policy, the evaluator).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from promptdiff.units import ACTION_PAD


class _Rows:
    """Row-wise operations shared by the prompt containers (every field has the prompt axis P first)."""

    @property
    def batch_size(self) -> int:
        return int(self.mask.shape[0])

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])

    def expand(self, batch_size: int):
        """Broadcast a single prompt (P = 1) to `batch_size` samples; P = batch_size passes."""
        if self.batch_size == batch_size:
            return self
        if self.batch_size != 1:
            raise ValueError(f"a prompt for {self.batch_size} samples cannot prompt a batch of {batch_size}")
        return type(self)(*(getattr(self, f.name).expand(batch_size, *getattr(self, f.name).shape[1:])
                            for f in fields(self)))  # fmt: skip

    def to(self, device):
        return type(self)(*(getattr(self, f.name).to(device) for f in fields(self)))

    def index(self, idx):
        """Select prompts (rows) by index."""
        return type(self)(*(getattr(self, f.name)[idx] for f in fields(self)))

    @classmethod
    def cat(cls, prompts: list):
        return cls(*(torch.cat([getattr(p, f.name) for p in prompts]) for f in fields(cls)))


@dataclass
class Prompt(_Rows):
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

    @classmethod
    def empty(cls, obs_dim: int, act_dim: int, length: int = 5, batch_size: int = 1, device=None) -> "Prompt":
        """No prompt: a fully padded one (mask 0), which the PLM's attention never looks at."""
        z = lambda *shape: torch.zeros(batch_size, length, *shape, device=device)  # noqa: E731
        return cls(z(obs_dim), z(act_dim) + ACTION_PAD, z(1), torch.zeros(batch_size, length, dtype=torch.long,
                   device=device), z())  # fmt: skip


@dataclass
class PromptTokens(_Rows):
    """An embedded prompt: tokens (P, 3 L, width), ordered R_1, s_1, a_1, R_2, ...; mask (P, L)."""

    tokens: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self) -> None:
        P, L = self.mask.shape
        if self.tokens.dim() != 3 or tuple(self.tokens.shape[:2]) != (P, 3 * L):
            raise ValueError(f"prompt tokens have shape {tuple(self.tokens.shape)}, expected ({P}, {3 * L}, width)")
