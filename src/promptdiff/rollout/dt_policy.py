"""A Prompt Decision Transformer driven step by step, for many environments at once.

`DTPolicy` turns the sequence model `PromptDT` into a policy. It keeps, per environment, the
whole history of the running episode (normalised states, actions taken, returns-to-go) in
numpy buffers preallocated to the horizon, and at every step feeds the model the K most recent
steps of every active environment in ONE batched forward pass.

Protocol, for n environments (env i keeps its own step counter t_i = steps taken so far):

    policy.reset(prompts, target_returns, horizon)       # prompts: Prompt with P = n (or 1)
    while any active:
        a = policy.act(obs, active)        # obs (n, obs_dim)       -> a (n, act_dim)
        obs, r, ... = env.step(a)
        policy.record(r, active)           # r (n,)

`act` appends the new observation o_{t_i} of every active env and asks the model for a_{t_i};
`record` stores the action just returned and the reward it earned. Rows of inactive envs are
ignored on input, left untouched in the history, and returned as zero actions.

What the model sees for env i at step t (K = units.context_length, window steps t-K+1 .. t), in
the PLM's units (`promptdiff.units.PLMUnits`):

    states         (K, obs_dim)  units.normalise_states(o)
    actions        (K, act_dim)  the actions taken at steps < t; the slot of step t is 0
    returns_to_go  (K, 1)        R_0 = target_return / rtg_scale, R_{s+1} = R_s - r_s / rtg_scale
    timesteps      (K,)          min(s, max_timestep - 1), the absolute step index s
    mask           (K,)          1 for real steps

Windows shorter than K (t < K - 1) are LEFT-padded with state 0, action ACTION_PAD, return-to-go
0, timestep 0 and mask 0, the same convention as the prompt (see `promptdiff.prompt`).
The action returned is the model's prediction at step t, clipped to [-1, 1].

A `PromptDT` (or a module with its `prompt_cache` and `act_last`) is driven step by step: the
prompt's keys and values are computed once per episode (the prompt attends only to itself, so they
never change), and each step computes only what the last action depends on (no window steps that
are padding in every row, early in the episodes); the actions equal the
full forward pass's last prediction to float32 rounding (tests/test_rollout.py). Any other module
gets the full forward pass.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from promptdiff.prompt import Prompt
from promptdiff.units import PLMUnits


class DTPolicy:
    """Batched, stateful rollout policy around a `PromptDT` (or any module with its forward).

    Args:
        model: module with `forward(states, actions, returns_to_go, timesteps, mask, prompt)`
            -> (B, K, act_dim) and an attribute `act_dim`; it is moved to `device` and put in eval mode
            (this changes the caller's module).
        units: the PLM's units (state statistics, return scale, timestep clip, K).
        device: where the forward pass runs.
        horizon: default capacity of the history buffers (steps per episode); `reset` may
            override it. The buffers grow if an episode runs longer.
        compile: run the model's step (`act_last`, or the forward pass) through `torch.compile`, with dynamic
            batch sizes (envs leave the batch when their episodes end). Off by default: no faster on the
            2-core development CPU, and it costs 20-25 s of compilation (docs/benchmarks.md).
        precision: "32" (float32) or "bf16" (the policy's steps under bfloat16 autocast: for GPUs; on a CPU
            without bfloat16 units it is slower). Actions then differ from float32 by bfloat16 rounding.
    """

    def __init__(self, model: nn.Module, units: PLMUnits, device: str | torch.device = "cpu",
                 horizon: int | None = None, compile: bool = False, precision: str = "32"):  # fmt: skip
        if units.state_mean is None:
            raise ValueError("DTPolicy needs units with state statistics (the PLM's)")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.units = units
        self.context_length = int(units.context_length)
        self.max_timestep = int(units.max_timestep)
        self.obs_dim = int(units.obs_dim)
        self.act_dim = int(model.act_dim)
        self.rtg_scale = units.rtg_scale
        self.horizon = int(horizon) if horizon is not None else self.max_timestep
        self.n_envs = 0
        self.precision = precision
        # a PLM that can act step by step (`prompt_cache`, `act_last`) computes the prompt once per episode
        self._stepwise = hasattr(model, "act_last") and hasattr(model, "prompt_cache")
        self._step_fn = self.model.act_last if self._stepwise else self.model
        self.compiled = compile
        if compile:
            self._step_fn = torch.compile(self._step_fn, dynamic=None)

    @property
    def precision(self) -> str:
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        if str(value) not in ("32", "bf16"):
            raise ValueError(f"precision {value!r}: expected '32' or 'bf16'")
        self._precision = str(value)

    @contextlib.contextmanager
    def _no_grad(self):
        """Inference mode, under bfloat16 autocast when precision is bf16."""
        with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16, enabled=self._precision == "bf16"):
            yield

    # -- episode state ----------------------------------------------------------------------

    def reset(self, prompts: Prompt | None, target_returns, horizon: int | None = None) -> None:
        """Start new episodes in n = len(target_returns) environments.

        prompts: Prompt with P = n (row i prompts env i), P = 1 (shared), or None (no prompt).
        target_returns: (n,) returns to aim for, in raw (unscaled) reward units.
        horizon: history capacity per env (defaults to the constructor's).
        """
        target = np.asarray(target_returns, dtype=np.float64).reshape(-1)
        n = target.shape[0]
        if prompts is not None:
            if prompts.batch_size == 1 and n > 1:
                prompts = prompts.expand(n)
            if prompts.batch_size != n:
                raise ValueError(f"{prompts.batch_size} prompts for {n} environments")
            prompts = prompts.to(self.device)
        self.prompts = prompts
        self._cache = None
        if self._stepwise and prompts is not None:
            with self._no_grad():
                self._cache = self.model.prompt_cache(prompts)
        self.n_envs = n
        cap = int(horizon) if horizon is not None else self.horizon
        act_dim = self.act_dim
        self._states = np.zeros((n, cap, self.obs_dim), np.float32)
        self._actions = np.zeros((n, cap, act_dim), np.float32)
        self._rtg = np.zeros((n, cap + 1), np.float64)  # slot s: return-to-go before step s
        self._rtg[:, 0] = target / self.rtg_scale
        self._steps = np.zeros(n, np.int64)  # observations received so far
        self._pending = np.zeros(n, bool)  # act() returned an action that record() has not stored
        self._last_action = np.zeros((n, act_dim), np.float32)

    @property
    def steps(self) -> np.ndarray:
        """(n,) number of observations each env has received in the current episode."""
        return self._steps.copy()

    def _grow(self, needed: int) -> None:
        """Enlarge the history buffers so that `needed` steps fit (episodes beyond the horizon)."""
        cap = max(needed, 2 * self._states.shape[1])
        pad = cap - self._states.shape[1]
        self._states = np.pad(self._states, ((0, 0), (0, pad), (0, 0)))
        self._actions = np.pad(self._actions, ((0, 0), (0, pad), (0, 0)))
        self._rtg = np.pad(self._rtg, ((0, 0), (0, pad)))

    # -- acting -----------------------------------------------------------------------------

    def window(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """The model inputs of envs `ids` (m,) at their current step, as numpy arrays.

        Returns states (m, K, obs_dim) float32, actions (m, K, act_dim) float32,
        returns_to_go (m, K, 1) float32, timesteps (m, K) int64, mask (m, K) float32.
        """
        K = self.context_length
        t = self._steps[ids] - 1  # index of the current step
        steps = t[:, None] + np.arange(1 - K, 1)  # (m, K) absolute step indices, oldest first
        real = steps >= 0
        src = np.maximum(steps, 0)
        rows = ids[:, None]
        states = np.where(real[..., None], self._states[rows, src], np.float32(0.0))
        actions = np.where(real[..., None], self._actions[rows, src], np.float32(self.units.action_pad))
        rtg = np.where(real, self._rtg[rows, src], 0.0).astype(np.float32)[..., None]
        timesteps = np.where(real, self.units.clip_timesteps(steps), 0)
        return {"states": states, "actions": actions, "returns_to_go": rtg,
                "timesteps": timesteps.astype(np.int64), "mask": real.astype(np.float32)}  # fmt: skip

    def act(self, obs: np.ndarray, active: np.ndarray | None = None) -> np.ndarray:
        """Actions (n, act_dim) float32 for observations (n, obs_dim); zeros for inactive rows."""
        if self.n_envs == 0:
            raise RuntimeError("call reset() before act()")
        obs = np.asarray(obs, dtype=np.float64).reshape(self.n_envs, self.obs_dim)
        active = np.ones(self.n_envs, bool) if active is None else np.asarray(active, bool)
        ids = np.flatnonzero(active)
        out = np.zeros((self.n_envs, self.act_dim), np.float32)
        if ids.size == 0:
            return out
        if self._pending[ids].any():
            raise RuntimeError("act() called twice without record() for the same environment")
        t = self._steps[ids]
        if t.max() >= self._states.shape[1]:
            self._grow(int(t.max()) + 1)
        self._states[ids, t] = self.units.normalise_states(obs[ids])
        self._actions[ids, t] = 0.0  # the current step's action slot
        self._steps[ids] = t + 1

        window = self.window(ids)
        if self._stepwise and not self.compiled:  # (inductor fails on a window length that varies)
            # steps that are padding in every window (early in episodes begun together) change no action
            keep = min(self.context_length, int(t.max()) + 1)
            window = {k: v[:, -keep:] for k, v in window.items()}
        inputs = {k: torch.from_numpy(v).to(self.device) for k, v in window.items()}
        prompt = self._cache if self._stepwise else self.prompts
        if prompt is not None and ids.size < self.n_envs:
            prompt = prompt.index(torch.from_numpy(ids).to(self.device))
        with self._no_grad():
            if self._stepwise:
                pred = self._step_fn(**inputs, cache=prompt)
            else:
                pred = self._step_fn(**inputs, prompt=prompt)[:, -1]
        action = np.clip(pred.float().cpu().numpy(), -1.0, 1.0)
        out[ids] = action
        self._last_action[ids] = action
        self._pending[ids] = True
        return out

    def record(self, rewards: np.ndarray, active: np.ndarray | None = None) -> None:
        """Store the actions `act` just returned and update returns-to-go with rewards (n,)."""
        active = np.ones(self.n_envs, bool) if active is None else np.asarray(active, bool)
        ids = np.flatnonzero(active)
        if not self._pending[ids].all():
            raise RuntimeError("record() for an environment that has no action from act()")
        rewards = np.asarray(rewards, dtype=np.float64).reshape(self.n_envs)
        t = self._steps[ids] - 1
        self._actions[ids, t] = self._last_action[ids]
        self._rtg[ids, t + 1] = self._rtg[ids, t] - rewards[ids] / self.rtg_scale
        self._pending[ids] = False
