"""The PLM's units: how raw trajectories are turned into what the Prompt Decision Transformer reads.

One `PLMUnits` object holds every convention that the data sampler, the prompt-tuning methods and
the rollout policy must agree on:

    state_mean, state_std   (obs_dim,) statistics of the TRAINING tasks' states: s -> (s - mean) / std
    rtg_scale               returns-to-go (and rewards) are divided by it
    max_timestep            timesteps are clipped to max_timestep - 1
    context_length          K, the most recent steps the policy sees
    prompt_length           L, the steps of a trajectory prompt
    action_pad              the action of a padding step (states pad with 0, returns-to-go 0, mask 0)

It is computed once, from the training data, when a PLM is pre-trained; it is saved in the PLM's
checkpoint (`checkpoint["plm_units"]`) and read back from it by every method and policy that uses
the PLM. Units without state statistics (`state_mean is None`) leave states raw: the few-shot data
module serves raw states and the method normalises them with its PLM's units.

This module sits below `data` and `models`: it imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch

ACTION_PAD = -10.0
"""The action of a padding step. The PLM never predicts it (its head ends in tanh)."""


@dataclass(frozen=True, eq=False)
class PLMUnits:
    state_mean: np.ndarray | None
    state_std: np.ndarray | None
    rtg_scale: float
    max_timestep: int
    context_length: int = 20
    prompt_length: int = 5
    action_pad: float = ACTION_PAD
    _tensors: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # (dtype, device) -> mean, std

    def __post_init__(self) -> None:
        if (self.state_mean is None) != (self.state_std is None):
            raise ValueError("state_mean and state_std must both be given or both be None")
        if self.state_mean is not None:
            mean = np.asarray(self.state_mean, np.float64).reshape(-1)
            std = np.asarray(self.state_std, np.float64).reshape(-1)
            if mean.shape != std.shape:
                raise ValueError(f"state_mean {mean.shape} and state_std {std.shape} differ in shape")
            if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
                raise ValueError("state statistics must be finite with std > 0")
            object.__setattr__(self, "state_mean", mean)
            object.__setattr__(self, "state_std", std)
        if not self.rtg_scale > 0:
            raise ValueError(f"rtg_scale must be > 0, got {self.rtg_scale}")
        for name in ("max_timestep", "context_length", "prompt_length"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        object.__setattr__(self, "rtg_scale", float(self.rtg_scale))

    def __eq__(self, other) -> bool:
        return isinstance(other, PLMUnits) and self.to_dict() == other.to_dict()

    __hash__ = None

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def raw(cls, family, context_length: int = 20, prompt_length: int = 5) -> "PLMUnits":
        """Units that leave states raw (no statistics yet), for a `TaskFamily`."""
        return cls(None, None, family.rtg_scale, family.horizon, context_length, prompt_length)

    def with_states(self, state_mean, state_std) -> "PLMUnits":
        return replace(self, state_mean=state_mean, state_std=state_std)

    def with_lengths(self, context_length: int | None = None, prompt_length: int | None = None) -> "PLMUnits":
        return replace(self, context_length=self.context_length if context_length is None else int(context_length),
                       prompt_length=self.prompt_length if prompt_length is None else int(prompt_length))  # fmt: skip

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        for key in ("state_mean", "state_std"):
            d[key] = None if d[key] is None else [float(x) for x in d[key]]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PLMUnits":
        return cls(**d)

    @property
    def obs_dim(self) -> int | None:
        return None if self.state_mean is None else int(self.state_mean.shape[0])

    # -- conversions (numpy float64 or torch, in the input's dtype) ------------------------------
    def normalise_states(self, states, mask=None):
        """(s - mean) / std over the last axis; steps where `mask` (same leading shape) is 0 become 0.

        numpy input is computed in float64; a torch tensor in its own dtype and device. Raw units return
        the states unchanged (masked likewise)."""
        if isinstance(states, torch.Tensor):
            out = states
            if self.state_mean is not None:
                key = (states.dtype, states.device)
                if key not in self._tensors:  # made once per dtype and device, not at every step
                    self._tensors[key] = (torch.as_tensor(self.state_mean, dtype=states.dtype, device=states.device),
                                          torch.as_tensor(self.state_std, dtype=states.dtype, device=states.device))
                mean, std = self._tensors[key]
                out = (states - mean) / std
            return out if mask is None else out * mask.unsqueeze(-1).to(out.dtype)
        out = np.asarray(states, np.float64)
        if self.state_mean is not None:
            out = (out - self.state_mean) / self.state_std
        return out if mask is None else out * np.asarray(mask, np.float64)[..., None]

    def scale_returns(self, values):
        """Returns-to-go or rewards in PLM units (divided by rtg_scale); numpy in float64."""
        if isinstance(values, torch.Tensor):
            return values / self.rtg_scale
        return np.asarray(values, np.float64) / self.rtg_scale

    def clip_timesteps(self, timesteps):
        """Timesteps clipped to max_timestep - 1 (the PLM's timestep table)."""
        if isinstance(timesteps, torch.Tensor):
            return timesteps.clamp_max(self.max_timestep - 1)
        return np.minimum(timesteps, self.max_timestep - 1)
