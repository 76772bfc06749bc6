"""The prompt-tuning method contract, and what every method shares: the frozen PLM, its units, the
few-shot segments and the expert prompt.

`PromptTuningMethod` is the class to extend. A method

* loads and freezes the PLM in its constructor (`self.load_plm(...)`), which fixes `self.family`,
  `self.tasks` (the tasks it tunes and is evaluated on) and `self.units` (the PLM's units);
* returns its prompt sets from `rollout_prompt_sets(datamodule, tasks, seed)` -> {set name: {task:
  prompt}}, one prompt (P = 1, PLM units) per task; its own result is the set named `primary_set`
  (other sets, e.g. the untouched expert prompt, are shown beside it);
* sets `policy_per_task = True` when its network differs per task (fine-tuned copies, adapters), and
  then answers `rollout_policy(task)` for each task;
* counts what it tunes in `num_tuned_parameters` (default: the parameters that require grad).

The rollout, figure and video callbacks and the benchmark use nothing else
(`promptdiff.callbacks.targets` decides, in one place, which tasks and prompts they evaluate).

Units: the PLM was pre-trained on states normalised with its training tasks' statistics; the
few-shot data module serves RAW states, and `normalised_segments` converts a batch once, with
the PLM's `units`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import torch
from torch import nn

from promptdiff.envs import get_family
from promptdiff.prompt import Prompt
from promptdiff.units import PLMUnits

# The frozen PLM is in eval mode on purpose; Lightning's start-of-fit notice about it is noise here.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
# Checkpoints hold the state after the step, which is what a resumed run continues from.
warnings.filterwarnings("ignore", message=r"Using ModelCheckpoint with manual optimization")


def default_plm_path(family, root: str | Path = "datasets", full_data: bool = False) -> Path:
    """Where a family's shipped PLM lives: <root>/<plm family>/plm.ckpt (plm_full.ckpt: the full-data bound)."""
    fam = get_family(family)
    return Path(root) / fam.plm_name / ("plm_full.ckpt" if full_data else "plm.ckpt")


def load_frozen_plm(path: str | Path, family, context_length: int, prompt_length: int):
    """The pre-trained PLM module from `path`, checked against the family (its `plm_name`) and K."""
    from promptdiff.methods.pretrain import PromptDTPretrain

    fam = get_family(family)
    path = Path(path)
    if not path.is_file():
        full = " --data.init_args.include_test_tasks true" if path.name == "plm_full.ckpt" else ""
        raise FileNotFoundError(f"PLM checkpoint {path} not found: pre-train one with "
                                f"`promptdiff fit --config conf/pretrain/{fam.plm_name}.yaml{full}` "
                                f"and copy its last.ckpt there, or point `model.init_args.plm` at a PLM checkpoint")  # fmt: skip
    try:
        plm = PromptDTPretrain.load_policy(str(path))
    except Exception as err:  # noqa: BLE001 - any load failure is reported with the file
        raise ValueError(f"PLM checkpoint {path} could not be loaded: {err}") from err
    hp = plm.hparams
    if hp.family != fam.plm_name:
        raise ValueError(f"PLM checkpoint {path} was pre-trained on family {hp.family!r}, not {fam.plm_name!r}")
    if hp.context_length != context_length:
        raise ValueError(f"PLM checkpoint {path} has context_length {hp.context_length}, the config asks for "
                         f"{context_length}")  # fmt: skip
    # The prompt length may differ from pre-training's: the PLM has no positional embedding, only timestep
    # embeddings, so any L is a valid prompt (the prompt-length benchmark measures what it costs).
    del prompt_length
    return plm


class PolicyModel(nn.Module):
    """A PLM plus per-task extras (adapters) behind the PLM's own forward, for `DTPolicy`."""

    def __init__(self, plm: nn.Module, adapters: nn.ModuleList | None = None):
        super().__init__()
        self.plm, self.adapters = plm, adapters
        self.act_dim = plm.act_dim

    def forward(self, states, actions, returns_to_go, timesteps, mask, prompt=None) -> torch.Tensor:
        return self.plm(states, actions, returns_to_go, timesteps, mask, prompt=prompt, adapters=self.adapters)

    def prompt_cache(self, prompt):
        return self.plm.prompt_cache(prompt, adapters=self.adapters)

    def act_last(self, states, actions, returns_to_go, timesteps, mask, cache=None) -> torch.Tensor:
        return self.plm.act_last(states, actions, returns_to_go, timesteps, mask, cache, adapters=self.adapters)


class MethodSetupError(ValueError):
    """A method cannot run as configured (tasks that differ from the data's, a strategy it does not support)."""


class PromptTuningMethod(L.LightningModule):
    """Base class of every prompt-tuning method on a frozen PLM (the contract: see the module docstring)."""

    primary_set: str = "generated"
    policy_per_task: bool = False
    #: True for a method whose update is not a gradient that DDP could average (each rank would move its
    #: parameters its own way): `fit` with more than one process is refused.
    single_process_only: bool = False

    def load_plm(self, family: str, plm: str | None, context_length: int, prompt_length: int,
                 tasks: list[int] | None = None, root: str = "datasets") -> None:  # fmt: skip
        """Load and freeze the PLM (default: <root>/<plm family>/plm.ckpt); `tasks` (the tasks the method tunes
        and is evaluated on) defaults to the family's test tasks."""
        fam = self.family = get_family(family)
        plm_path = plm if plm is not None else default_plm_path(fam, root)
        plm_module = load_frozen_plm(plm_path, fam, context_length, prompt_length)
        self.plm = plm_module.model.requires_grad_(False).eval()
        self.units: PLMUnits = plm_module.units.with_lengths(context_length, prompt_length)
        self.tasks = list(fam.test_tasks if tasks is None else tasks)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # checkpoints written before the units moved to the PLM held copies of its state statistics
        for key in ("state_mean", "state_std"):
            checkpoint.get("state_dict", {}).pop(key, None)

    def train(self, mode: bool = True):
        super().train(mode)
        self.plm.eval()  # frozen: dropout stays off whatever Lightning asks
        return self

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.check_processes(self.trainer.world_size)
        served = getattr(getattr(self.trainer, "datamodule", None), "tasks", None)
        if served is not None and not self._serves(list(served)):
            raise MethodSetupError(f"the data module serves tasks {list(served)} but the model tunes {self.tasks}: "
                             f"set the same split (and tasks) in model and data")  # fmt: skip

    def check_processes(self, world_size: int) -> None:
        """Refuse to train in `world_size` > 1 processes if the method is single-process only (`promptdiff fit`
        asks before any process is started; `setup` asks again in each)."""
        if self.single_process_only and world_size > 1:
            raise MethodSetupError(f"{type(self).__name__} runs in one process only (its update is not a gradient "
                                   f"that DDP averages, so {world_size} processes would diverge): "
                                   "set --trainer.devices 1 --trainer.num_nodes 1")  # fmt: skip

    def _serves(self, served: list[int]) -> bool:
        return served == self.tasks

    # -- the contract --------------------------------------------------------------------------------
    @property
    def rollout_tasks(self) -> list[int]:
        """The tasks the callbacks evaluate: the tuned ones (test tasks, or validation tasks)."""
        return list(self.tasks)

    @property
    def num_tuned_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def rollout_prompt_sets(self, datamodule, tasks: list[int], seed: int = 0) -> dict[str, dict]:
        """{set name: {task: prompt (P = 1, PLM units)}}; must contain `primary_set`."""
        raise NotImplementedError(f"{type(self).__name__} must implement rollout_prompt_sets")

    def rollout_policy(self, task: int | None = None):
        """The policy the evaluator drives (of `task` when `policy_per_task`)."""
        from promptdiff.rollout import DTPolicy

        return DTPolicy(self.policy_model(task), self.units, device=self.device)

    def policy_model(self, task: int | None) -> nn.Module:
        """The network the rollout drives (the frozen PLM unless a method changes it per task)."""
        return self.plm

    # -- units -------------------------------------------------------------------------------------
    def normalise_states(self, states: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.units.normalise_states(states, mask)

    def normalised_segments(self, batch: dict) -> dict[str, torch.Tensor]:
        """The batch's K-step few-shot segments, (T, B, ...), states normalised (padding stays 0), keys
        prefixed `seg_`."""
        seg = batch["segment"]
        seg = dict(seg, states=self.normalise_states(seg["states"], seg["mask"]))
        return {f"seg_{k}": v for k, v in seg.items()}

    def plm_action_loss(self, prompt, g: dict, model: nn.Module | None = None,
                        adapters: nn.ModuleList | None = None) -> torch.Tensor:  # fmt: skip
        """Per-sample masked action MSE (N,) of the PLM (or `model`) on segments g, prompted by `prompt`."""
        model = self.plm if model is None else model
        pred = model(g["seg_states"], g["seg_actions"], g["seg_returns_to_go"], g["seg_timesteps"], g["seg_mask"],
                     prompt=prompt, **({"adapters": adapters} if adapters is not None else {}))  # fmt: skip
        m = g["seg_mask"].unsqueeze(-1)
        return ((pred - g["seg_actions"]) ** 2 * m).sum(dim=(1, 2)) / (m.sum(dim=(1, 2)) * pred.shape[-1]).clamp_min(1)

    # -- prompts -----------------------------------------------------------------------------------
    def expert_prompts(self, datamodule, tasks: list[int], seed: int = 0) -> dict[int, Prompt]:
        """The plain few-shot tail prompts (the Prompt-DT baseline), normalised with the PLM's units."""
        out = {}
        for t, p in datamodule.tail_prompts(tasks, seed).items():
            p = p.to(self.device)
            out[t] = Prompt(self.normalise_states(p.states, p.mask), p.actions, p.returns_to_go, p.timesteps, p.mask)
        return out


