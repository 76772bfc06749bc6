"""Prompt-tuning baselines, on the same frozen PLM, few-shot data and evaluator as Prompt Diffuser.

Every method adapts the shipped PLM to each test task from that task's few-shot data only (the
`FewShotDataModule` on the test split: K-step segments of its 5 prompt-pool trajectories) and
is judged by rolling the PLM out on the test tasks (`RolloutCallback`).

| method (config)              | class            | tuned on each test task                              |
|------------------------------|------------------|------------------------------------------------------|
| prompt_dt                    | PromptDTExpert   | nothing: the expert few-shot prompt                  |
| mt_orl                       | MTORL            | nothing: no prompt at all (fully masked)             |
| full_data                    | FullDataBound    | nothing: expert prompt, PLM pre-trained on all tasks |
| prompt_dt_ft                 | PromptDTFinetune | the whole PLM (one copy per task)                    |
| soft_prompt                  | SoftPrompt       | the prompt's 3 L embedded tokens                     |
| adaptor                      | Adaptor          | bottleneck adapters after every transformer block    |
| prompt_tuning_dt             | PromptTuningDT   | the prompt's states and actions, zeroth order        |

The gradient-based tuners minimise the PLM's masked action MSE on the task's segments, with the
task's expert prompt (tail of the prompt-pool trajectory `prompt_seed`) as the prompt, or as the
starting point of the tuned prompt. The quality of that prompt and of the few-shot data is the
data module's `quality` (the prompt-initialisation study varies it).

`GradientTuner` is the class to extend for a new gradient-based method: give it the tuned parameters and
a `task_loss` (see docs/extending.md).

MT-ORL here is the same PLM evaluated with an all-padding prompt (mask 0): the attention never
sees it, so the policy acts from its own context alone. (Prompt-DT's MT-ORL is a separate model
pre-trained without prompts; this variant measures what the prompt contributes to our PLM.)
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from torch import nn

from promptdiff.envs import get_family
from promptdiff.methods.divergence import stop_if_not_finite
from promptdiff.methods.frozen_plm import PolicyModel, PromptTuningMethod, default_plm_path
from promptdiff.optim import RankOptimiser
from promptdiff.prompt import Prompt, PromptTokens

# Evaluation-only methods fit for 0 steps and have no optimiser by design.
warnings.filterwarnings("ignore", message=r"`LightningModule.configure_optimizers` returned `None`")


class PromptDTExpert(PromptTuningMethod):
    primary_set = "expert"

    def __init__(self, family: str, plm: str | None = None, context_length: int = 20, prompt_length: int = 5,
                 split: str = "test", root: str = "datasets", tasks: list[int] | None = None):  # fmt: skip
        """Prompt-DT: the frozen PLM prompted with each task's expert few-shot prompt, no tuning (run with
        `trainer.max_steps: 0`).

        Args:
            family: task family (linked from the data module).
            plm: PLM checkpoint (default: <root>/<family>/plm.ckpt, the shipped one).
            context_length, prompt_length: K and L (linked from the data module; must match the PLM).
            split: the tasks evaluated: "test" (default) or "val" (the family's held-out training tasks,
                `val_tasks`: the reference when hyper-parameters are chosen there). Linked from the data module.
            root, tasks: dataset root and the split's tasks (linked from the data module).
        """
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        if split == "train":
            raise ValueError("split 'train' is for stage-1 pre-training; evaluate on 'test' or 'val' tasks")
        self.load_plm(family, self._plm_path(plm, family, root), context_length, prompt_length,
                      tasks=get_family(family).split_tasks(split, tasks), root=root)  # fmt: skip

    def _plm_path(self, plm, family, root):
        return plm

    def training_step(self, batch: dict, batch_idx: int) -> None:
        return None

    def configure_optimizers(self):
        return None

    def rollout_prompt_sets(self, datamodule, tasks: list[int], seed: int = 0) -> dict[str, dict]:
        return {self.primary_set: self.expert_prompts(datamodule, tasks, seed)}


class FullDataBound(PromptDTExpert):
    """The full-data upper bound: the expert prompt on a PLM pre-trained with the test tasks' full data too
    (default PLM: <root>/<family>/plm_full.ckpt). Arguments as `PromptDTExpert`."""

    def _plm_path(self, plm, family, root):
        return plm if plm is not None else str(default_plm_path(family, root, full_data=True))


class MTORL(PromptDTExpert):
    """MT-ORL: the frozen PLM with no prompt at all (fully masked: the attention never sees it). Arguments as
    `PromptDTExpert`."""

    primary_set = "no_prompt"

    def rollout_prompt_sets(self, datamodule, tasks: list[int], seed: int = 0) -> dict[str, dict]:
        fam, L = self.family, self.hparams.prompt_length
        return {self.primary_set: {t: Prompt.empty(fam.obs_dim, fam.act_dim, L, device=self.device) for t in tasks}}


class GradientTuner(PromptTuningMethod):
    """Tunes per-task parameters by the PLM's action loss on the few-shot segments (AdamW).

    A subclass calls `_init_tuner(...)` in its constructor (after `save_hyperparameters`), creates its tuned
    parameters (one slice per task in `self.tasks`), and implements `task_loss(j, g)`: the per-sample action loss
    (N,) of task j on its normalised segments g. Optional: `init_from_prompt(prompt)` (start from the tasks'
    expert prompts, one row per task), `tuned_prompts()`, and `policy_model(task)` with `policy_per_task = True`.
    Its hyper-parameters must include `lr`, `weight_decay` and `prompt_seed`.
    """

    primary_set = "tuned"

    def _init_tuner(self, family, plm, context_length, prompt_length, split: str = "test", root: str = "datasets",
                    tasks: list[int] | None = None) -> None:  # fmt: skip
        if split == "train":
            raise ValueError("split 'train' is for stage-1 pre-training; tune on 'test' or 'val' tasks")
        self.load_plm(family, plm, context_length, prompt_length, tasks=get_family(family).split_tasks(split, tasks),
                      root=root)  # fmt: skip
        fam, L = self.family, prompt_length
        # the task's expert prompt (PLM units), filled from the data module when fitting starts
        self.register_buffer("prompt_states", torch.zeros(len(self.tasks), L, fam.obs_dim))
        self.register_buffer("prompt_actions", torch.zeros(len(self.tasks), L, fam.act_dim))
        self.register_buffer("prompt_rtg", torch.zeros(len(self.tasks), L, 1))
        self.register_buffer("prompt_timesteps", torch.zeros(len(self.tasks), L, dtype=torch.long))
        self.register_buffer("prompt_mask", torch.zeros(len(self.tasks), L))

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit":
            start = self.expert_prompts(self.trainer.datamodule, self.tasks, self.hparams.prompt_seed)
            p = Prompt.cat([start[t] for t in self.tasks])
            for name, value in (("states", p.states), ("actions", p.actions), ("rtg", p.returns_to_go),
                                ("timesteps", p.timesteps), ("mask", p.mask)):  # fmt: skip
                getattr(self, f"prompt_{name}").copy_(value)
            self.init_from_prompt(p)

    def init_from_prompt(self, prompt: Prompt) -> None:
        """Start the tuned parameters from the tasks' expert prompts (one row per task)."""

    def start_prompt(self, j: int) -> Prompt:
        """Task j's expert prompt (P = 1), the one tuning started from."""
        return Prompt(self.prompt_states[j:j + 1], self.prompt_actions[j:j + 1], self.prompt_rtg[j:j + 1],
                      self.prompt_timesteps[j:j + 1], self.prompt_mask[j:j + 1])  # fmt: skip

    def task_loss(self, j: int, g: dict) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, batch: dict) -> torch.Tensor:
        """Mean over tasks of each task's action MSE (the tasks' parameters are disjoint)."""
        seg = self.normalised_segments(batch)
        return torch.stack([self.task_loss(j, {k: v[j] for k, v in seg.items()}).mean()
                            for j in range(len(self.tasks))]).mean()  # fmt: skip

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        stop_if_not_finite(loss, "action loss", self.global_step)
        self.log("train/action_mse", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.log("val/action_mse", self.loss(batch), sync_dist=True)

    def configure_optimizers(self):
        hp = self.hparams
        return torch.optim.AdamW([p for p in self.parameters() if p.requires_grad], lr=hp.lr, weight_decay=hp.weight_decay)

    def tuned_prompts(self) -> dict[int, Prompt | PromptTokens]:
        return {t: self.start_prompt(j) for j, t in enumerate(self.tasks)}

    def rollout_prompt_sets(self, datamodule, tasks: list[int], seed: int = 0) -> dict[str, dict]:
        tuned = self.tuned_prompts()
        sets = {"tuned": {t: tuned[t] for t in tasks}}
        if not self.policy_per_task:  # the expert prompt on the untouched PLM, for comparison
            sets["expert"] = self.expert_prompts(datamodule, tasks, seed)
        return sets


class PromptDTFinetune(GradientTuner):
    policy_per_task = True

    def __init__(self, family: str, plm: str | None = None, context_length: int = 20, prompt_length: int = 5,
                 lr: float = 1e-4, weight_decay: float = 1e-4, prompt_seed: int = 0, split: str = "test",
                 root: str = "datasets", tasks: list[int] | None = None):  # fmt: skip
        """Prompt-DT-FT: a copy of the whole PLM per test task, fine-tuned on its few-shot data with its
        expert prompt (dropout as in pre-training).

        Args:
            family, plm, context_length, prompt_length, split, root, tasks: as in `PromptDTExpert`.
            lr, weight_decay: AdamW settings.
            prompt_seed: which prompt-pool trajectory's tail is the task's prompt (as in the rollout callback).
        """
        super().__init__()
        self.save_hyperparameters()
        self._init_tuner(family, plm, context_length, prompt_length, split, root, tasks)
        # train(): the copies come from the frozen PLM in eval mode, and Lightning keeps a module's mode at fit start
        self.models = nn.ModuleList(copy.deepcopy(self.plm).requires_grad_(True).train() for _ in self.tasks)

    def task_loss(self, j: int, g: dict) -> torch.Tensor:
        return self.plm_action_loss(self.start_prompt(j), g, model=self.models[j])

    def policy_model(self, task: int | None) -> nn.Module:
        return self.models[self.tasks.index(task)]


class SoftPrompt(GradientTuner):
    def __init__(self, family: str, plm: str | None = None, context_length: int = 20, prompt_length: int = 5,
                 lr: float = 1e-3, weight_decay: float = 0.0, prompt_seed: int = 0, split: str = "test",
                 root: str = "datasets", tasks: list[int] | None = None):  # fmt: skip
        """Soft prompt: the 3 L tokens the PLM embeds the prompt into become free parameters per task,
        initialised from the task's prompt (expert, or medium / random with the data module's quality).

        Args: as in `PromptDTFinetune`.
        """
        super().__init__()
        self.save_hyperparameters()
        self._init_tuner(family, plm, context_length, prompt_length, split, root, tasks)
        width = self.plm.embed_ln.normalized_shape[0]
        self.tokens = nn.Parameter(torch.zeros(len(self.tasks), 3 * prompt_length, width))

    @torch.no_grad()
    def init_from_prompt(self, prompt: Prompt) -> None:
        self.tokens.copy_(self.plm.embed_prompt(prompt).tokens)

    def task_loss(self, j: int, g: dict) -> torch.Tensor:
        return self.plm_action_loss(PromptTokens(self.tokens[j:j + 1], self.prompt_mask[j:j + 1]), g)

    def tuned_prompts(self) -> dict[int, PromptTokens]:
        return {t: PromptTokens(self.tokens[j:j + 1].detach(), self.prompt_mask[j:j + 1]) for j, t in enumerate(self.tasks)}


class Adaptor(GradientTuner):
    policy_per_task = True

    def __init__(self, family: str, plm: str | None = None, context_length: int = 20, prompt_length: int = 5,
                 bottleneck: int = 16, lr: float = 1e-3, weight_decay: float = 0.0, prompt_seed: int = 0,
                 split: str = "test", root: str = "datasets", tasks: list[int] | None = None):  # fmt: skip
        """Adaptor: per test task, a bottleneck adapter x -> x + W_up relu(W_down x) after every block of
        the frozen PLM (W_up starts at 0: tuning starts from the PLM itself), prompted by the expert prompt.

        Args:
            bottleneck: width of each adapter's hidden layer.
            others: as in `PromptDTFinetune`.
        """
        super().__init__()
        self.save_hyperparameters()
        if bottleneck < 1:
            raise ValueError(f"bottleneck must be >= 1, got {bottleneck}")
        self._init_tuner(family, plm, context_length, prompt_length, split, root, tasks)
        width = self.plm.embed_ln.normalized_shape[0]
        self.adapters = nn.ModuleList(nn.ModuleList(self._adapter(width, bottleneck) for _ in self.plm.blocks)
                                      for _ in self.tasks)  # fmt: skip

    @staticmethod
    def _adapter(width: int, bottleneck: int) -> nn.Module:
        up = nn.Linear(bottleneck, width)
        nn.init.zeros_(up.weight)
        nn.init.zeros_(up.bias)
        return nn.Sequential(nn.Linear(width, bottleneck), nn.ReLU(), up)

    def task_loss(self, j: int, g: dict) -> torch.Tensor:
        return self.plm_action_loss(self.start_prompt(j), g, adapters=self.adapters[j])

    def policy_model(self, task: int | None) -> nn.Module:
        return PolicyModel(self.plm, self.adapters[self.tasks.index(task)])


class PromptTuningDT(GradientTuner):
    single_process_only = True  # the rank optimiser's step is no gradient: DDP would not keep ranks equal

    def __init__(self, family: str, plm: str | None = None, context_length: int = 20, prompt_length: int = 5,
                 queries: int = 15, std: float = 1.0, momentum: float = 0.5, lr: float = 1e-4,
                 prompt_seed: int = 0, rank_seed: int = 0, split: str = "test", root: str = "datasets",
                 tasks: list[int] | None = None):  # fmt: skip
        """Prompt-Tuning DT (offline variant): every training step, per task, m Gaussian perturbations of the
        prompt's states and actions (PLM units) are scored by the PLM's action loss on the step's few-shot
        segments, and the prompt moves along the rank-weighted direction (`promptdiff.optim.RankOptimiser`).
        Run for 10 steps (`trainer.max_steps`), as the reference does.

        Args:
            queries, std, momentum, lr: m, sigma, momentum and step size of the rank optimiser.
            rank_seed: seed of the perturbations.
            others: as in `PromptDTFinetune`.
        """
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self._init_tuner(family, plm, context_length, prompt_length, split, root, tasks)
        # the tuned prompts: per task, its states and actions (L, obs + act) in PLM units; no gradient flows here
        width = self.family.obs_dim + self.family.act_dim
        self.prompt_x = nn.ParameterList(nn.Parameter(torch.zeros(prompt_length, width), requires_grad=False)
                                         for _ in self.tasks)  # fmt: skip

    @property
    def num_tuned_parameters(self) -> int:
        return sum(p.numel() for p in self.prompt_x)

    @torch.no_grad()
    def init_from_prompt(self, prompt: Prompt) -> None:
        x = torch.cat([prompt.states, prompt.actions], dim=-1)
        for j, p in enumerate(self.prompt_x):
            p.copy_(x[j])

    def _prompts_from(self, j: int, x: torch.Tensor) -> Prompt:
        """Prompts (m,) with states and actions from x (m, L, obs + act), the rest from task j's prompt."""
        m, obs = x.shape[0], self.family.obs_dim
        p = self.start_prompt(j).expand(m)
        return Prompt(x[..., :obs] * p.mask.unsqueeze(-1), x[..., obs:], p.returns_to_go, p.timesteps, p.mask)

    @torch.no_grad()
    def training_step(self, batch: dict, batch_idx: int) -> None:
        seg = self.normalised_segments(batch)
        opt = self.optimizers()
        rank = opt.optimizer
        groups = [{k: v[j] for k, v in seg.items()} for j in range(len(self.tasks))]
        for j, (x, g) in enumerate(zip(self.prompt_x, groups)):
            B, m = g["seg_mask"].shape[0], rank.defaults["queries"]
            queries = rank.ask(x)  # (m, L, obs + act)
            rows = {k: v.repeat(m, *([1] * (v.dim() - 1))) for k, v in g.items()}  # query-major
            prompts = self._prompts_from(j, queries.repeat_interleave(B, dim=0))
            rank.tell(x, self.plm_action_loss(prompts, rows).view(m, B).mean(dim=1))
        opt.step()  # every task's prompt moves (a real optimiser step, which Lightning counts)
        losses = []
        for j, (x, g) in enumerate(zip(self.prompt_x, groups)):
            self.prompt_states[j] = x[..., :self.family.obs_dim] * self.prompt_mask[j].unsqueeze(-1)
            self.prompt_actions[j] = x[..., self.family.obs_dim:]
            losses.append(self.plm_action_loss(self.start_prompt(j), g).mean())
        self.log("train/action_mse", torch.stack(losses).mean(), prog_bar=True)

    def task_loss(self, j: int, g: dict) -> torch.Tensor:
        return self.plm_action_loss(self.start_prompt(j), g)

    def configure_optimizers(self):
        """The rank optimiser over the tasks' prompts, one generator per task (seeded by rank_seed and the task)."""
        hp = self.hparams
        groups = [{"params": [x], "seed": int(np.random.SeedSequence([hp.rank_seed, t]).generate_state(1)[0])}
                  for x, t in zip(self.prompt_x, self.tasks)]  # fmt: skip
        return RankOptimiser(groups, queries=hp.queries, std=hp.std, momentum=hp.momentum, lr=hp.lr)
