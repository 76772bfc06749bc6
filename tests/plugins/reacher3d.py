"""A promptdiff plugin: a task family, a prompt-tuning method and a denoiser backbone of one's own.

Load it with `promptdiff --plugin tests/plugins/reacher3d.py <command> ...` or by naming the file in
PROMPTDIFF_PLUGINS (docs/extending.md walks through each part; tests/test_extending.py runs them). Loaded
from a file, this module is named `promptdiff_plugin_reacher3d`, so configs name its classes
`promptdiff_plugin_reacher3d.PromptBias` etc. (`reacher3d.PromptBias` with PYTHONPATH=tests/plugins and
PROMPTDIFF_PLUGINS=reacher3d); the family's own "module:Class" strings follow whichever name via `__name__`.

* family `reacher3d`: a 3-D point starts at the origin and must reach a hidden goal on the upper unit
  hemisphere (16 goals, 4 of them test tasks); reward minus the distance to the goal; 20 steps.
* method `PromptBias`: per task, one learned offset added to every state of the expert prompt.
* denoiser `FiLMDenoiser`: a one-hidden-layer MLP whose hidden layer is scaled and shifted (FiLM) by the
  diffusion step and the condition vector.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from promptdiff.envs import QualityBar, TaskFamily, register_family
from promptdiff.envs.families import task_parameter
from promptdiff.methods import GradientTuner
from promptdiff.models import Prompt, SinusoidalEmbedding

MAX_STEP = 0.1  # per axis and step
SUCCESS_RADIUS = 0.05


# -- 1. the task family ----------------------------------------------------------------------------
class Reacher3DEnv(gym.Env):
    """Observation: the point's position (3,). Action: a move in [-0.1, 0.1]^3. Reward: minus the distance to
    the goal after the move. The goal (the task parameter, x y z) is not observed."""

    metadata = {"render_modes": []}

    def __init__(self, task: int = 0, task_param=None, render_mode: str | None = None):
        self.task = int(task)
        self.task_param = task_parameter("reacher3d", self.task, task_param)  # the goal
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float64)
        self.action_space = spaces.Box(-MAX_STEP, MAX_STEP, shape=(3,), dtype=np.float32)
        self.render_mode = render_mode
        self._pos = np.zeros(3)

    @property
    def goal(self) -> np.ndarray:
        return self.task_param

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._pos = np.zeros(3)
        return self._pos.copy(), {}

    def step(self, action):
        self._pos = self._pos + np.clip(np.asarray(action, np.float64), -MAX_STEP, MAX_STEP)
        distance = float(np.linalg.norm(self._pos - self.goal))
        info = {"distance": distance, "success": distance <= SUCCESS_RADIUS}
        return self._pos.copy(), -distance, False, False, info  # the horizon truncates


class Reacher3DExpert:
    """Scripted expert (a batch policy): step straight at each env's goal, clipped to the action box."""

    name = "scripted:reacher3d"

    def __init__(self, family):
        del family  # the goal is on the env

    def __call__(self, obs: np.ndarray, envs: list, rng: np.random.Generator) -> np.ndarray:
        goals = np.stack([env.unwrapped.goal for env in envs])
        return np.clip(goals - obs, -MAX_STEP, MAX_STEP).astype(np.float32)


def hemisphere_goals(n: int) -> tuple[tuple[float, float, float], ...]:
    """n points spread over the upper unit hemisphere (a Fibonacci spiral, z from 0.95 down to 0.05)."""
    golden = math.pi * (3.0 - math.sqrt(5.0))
    goals = []
    for i in range(n):
        z = 0.95 - 0.9 * i / (n - 1)
        r = math.sqrt(1.0 - z * z)
        goals.append((round(r * math.cos(golden * i), 6), round(r * math.sin(golden * i), 6), round(z, 6)))
    return tuple(goals)


REACHER3D = register_family(TaskFamily(
    name="reacher3d",
    env_id="promptdiff_plugins/Reacher3D-v0",
    entry_point=f"{__name__}:Reacher3DEnv",  # whatever name this module was imported under
    num_tasks=16,
    test_tasks=(2, 6, 10, 14),
    horizon=20,
    obs_dim=3,
    act_dim=3,
    rtg_scale=10.0,  # expert returns are about -3 to -5
    target_return=0.0,
    expert="scripted",
    scripted_policy=f"{__name__}:Reacher3DExpert",
    description="3-D point reaches a hidden goal on the upper unit hemisphere",
    params=hemisphere_goals(16),
    has_success=True,
    collect_defaults={"episodes_per_task": 10, "prompt_episodes": 5, "action_noise": 0.2, "prompt_action_noise": 0.1},
    quality_bar=QualityBar(min_mean_success=0.9),
))  # fmt: skip


# -- 2. a prompt-tuning method -----------------------------------------------------------------------
class PromptBias(GradientTuner):
    def __init__(self, family: str, plm: str | None = None, context_length: int = 20, prompt_length: int = 5,
                 lr: float = 1e-2, weight_decay: float = 0.0, prompt_seed: int = 0, split: str = "test",
                 root: str = "datasets", tasks: list[int] | None = None):  # fmt: skip
        """Prompt bias: per task, one offset (obs_dim,) added to every real state of the task's expert prompt
        (PLM units), tuned by the frozen PLM's action loss on the task's few-shot data; starts at 0, i.e. at
        the expert prompt. Tunes tasks x obs_dim numbers.

        Args: as `promptdiff.methods.SoftPrompt` (lr, weight_decay: AdamW; prompt_seed: the expert prompt).
        """
        super().__init__()
        self.save_hyperparameters()
        self._init_tuner(family, plm, context_length, prompt_length, split, root, tasks)
        self.bias = nn.Parameter(torch.zeros(len(self.tasks), self.family.obs_dim))

    def prompt(self, j: int) -> Prompt:
        p = self.start_prompt(j)  # task j's expert prompt, P = 1
        states = p.states + self.bias[j] * p.mask.unsqueeze(-1)  # padding steps stay 0
        return Prompt(states, p.actions, p.returns_to_go, p.timesteps, p.mask)

    def task_loss(self, j: int, g: dict) -> torch.Tensor:
        return self.plm_action_loss(self.prompt(j), g)

    @torch.no_grad()
    def tuned_prompts(self) -> dict[int, Prompt]:
        return {t: self.prompt(j) for j, t in enumerate(self.tasks)}


# -- 3. a denoiser backbone ----------------------------------------------------------------------------
class FiLMDenoiser(nn.Module):
    """xt (B, x_dim), diffusion step t (B,), condition vector (B, cond_dim) -> (B, x_dim):
    h = SiLU(Linear(xt)); h = h * (1 + scale) + shift with (scale, shift) = Linear(SiLU([emb(t), cond]));
    output Linear(h), zero-initialised (an untrained model outputs 0)."""

    def __init__(self, x_dim: int, cond_dim: int, prompt_length: int, hidden: int = 128, time_dim: int = 32):
        super().__init__()
        del prompt_length  # part of the backbone protocol; this MLP sees the window flattened
        self.time = SinusoidalEmbedding(time_dim)
        self.film = nn.Sequential(nn.SiLU(), nn.Linear(time_dim + cond_dim, 2 * hidden))
        self.input = nn.Linear(x_dim, hidden)
        self.output = nn.Linear(hidden, x_dim)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, xt: torch.Tensor, t: torch.Tensor, cond_vec: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(torch.cat([self.time(t).to(xt.dtype), cond_vec], dim=-1)).chunk(2, dim=-1)
        h = nn.functional.silu(self.input(xt))
        return self.output(h * (1 + scale) + shift)
