"""What every prompt-tuning method shares: the frozen PLM, its units, the few-shot segments and the
expert prompt, and the rollout interface the `RolloutCallback` drives.

A method subclasses `FrozenPLMMethod`, calls `self.load_plm(...)` in its constructor, and
provides `rollout_prompt_sets(datamodule, tasks, seed)` -> {set name: {task: prompt}}, naming
its own result set in the class attribute `primary_set`. Methods whose policy differs per task
(fine-tuned PLMs, adapters) set `policy_per_task = True` and accept `rollout_policy(task)`.

Units: the PLM was pre-trained on states normalised with its training tasks' statistics; the
few-shot data module serves RAW states, and `normalised_segments` converts a batch once.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import torch
from torch import nn

from promptdiff.envs import get_family
from promptdiff.models import Prompt

# The frozen PLM is in eval mode on purpose; Lightning's start-of-fit notice about it is noise here.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
# Checkpoints hold the state after the step, which is what a resumed run continues from.
warnings.filterwarnings("ignore", message=r"Using ModelCheckpoint with manual optimization")


def load_frozen_plm(path: str | Path, family: str, context_length: int, prompt_length: int):
    """The pre-trained PLM module from `path`, checked against the family and context length K."""
    from promptdiff.methods.pretrain import PromptDTPretrain

    path = Path(path)
    if not path.is_file():
        full = " --data.init_args.include_test_tasks true" if path.name == "plm_full.ckpt" else ""
        raise FileNotFoundError(f"PLM checkpoint {path} not found: pre-train one with "
                                f"`promptdiff fit --config conf/pretrain/{family}.yaml{full}` and copy its last.ckpt "
                                f"there, or point `model.init_args.plm` at a shipped datasets/<family>/plm.ckpt")  # fmt: skip
    try:
        plm = PromptDTPretrain.load_policy(str(path))
    except Exception as err:  # noqa: BLE001 - any load failure is reported with the file
        raise ValueError(f"PLM checkpoint {path} could not be loaded: {err}") from err
    hp = plm.hparams
    if hp.family != family:
        raise ValueError(f"PLM checkpoint {path} was pre-trained on family {hp.family!r}, not {family!r}")
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
        self.act_dim, self.context_length, self.max_timestep = plm.act_dim, plm.context_length, plm.max_timestep

    def forward(self, states, actions, returns_to_go, timesteps, mask, prompt=None) -> torch.Tensor:
        return self.plm(states, actions, returns_to_go, timesteps, mask, prompt=prompt, adapters=self.adapters)


class FrozenPLMMethod(L.LightningModule):
    primary_set = "generated"
    policy_per_task = False

    def load_plm(self, family: str, plm: str | None, context_length: int, prompt_length: int,
                 tasks: list[int] | None = None) -> None:  # fmt: skip
        """Load and freeze the PLM (default: the shipped datasets/<family>/plm.ckpt); `tasks` (the tasks the
        method tunes and is evaluated on) defaults to the family's test tasks."""
        fam = self.family = get_family(family)
        plm_path = plm if plm is not None else str(Path("datasets") / family / "plm.ckpt")
        plm_module = load_frozen_plm(plm_path, family, context_length, prompt_length)
        self.plm = plm_module.model.requires_grad_(False).eval()
        self.register_buffer("state_mean", plm_module.state_mean.clone())
        self.register_buffer("state_std", plm_module.state_std.clone())
        self.tasks = list(fam.test_tasks if tasks is None else tasks)

    def train(self, mode: bool = True):
        super().train(mode)
        self.plm.eval()  # frozen: dropout stays off whatever Lightning asks
        return self

    def setup(self, stage: str) -> None:
        served = getattr(getattr(self.trainer, "datamodule", None), "tasks", None)
        if served is not None and not self._serves(list(served)):
            raise ValueError(f"the data module serves tasks {list(served)} but the model tunes {self.tasks}: "
                             f"set the same split (and tasks) in model and data")  # fmt: skip

    def _serves(self, served: list[int]) -> bool:
        return served == self.tasks

    @property
    def rollout_tasks(self) -> list[int]:
        """The tasks the `RolloutCallback` evaluates: the tuned ones (test tasks, or validation tasks)."""
        return list(self.tasks)

    @property
    def num_tuned_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # -- units -------------------------------------------------------------------------------------
    def normalise_states(self, states: torch.Tensor) -> torch.Tensor:
        return (states - self.state_mean) / self.state_std

    def normalised_segments(self, batch: dict) -> dict[str, torch.Tensor]:
        """The batch's K-step few-shot segments, (T, B, ...), states normalised (padding stays 0), keys
        prefixed `seg_`."""
        seg = batch["segment"]
        seg = dict(seg, states=self.normalise_states(seg["states"]) * seg["mask"].unsqueeze(-1))
        return {f"seg_{k}": v for k, v in seg.items()}

    def plm_action_loss(self, prompt, g: dict, model: nn.Module | None = None,
                        adapters: nn.ModuleList | None = None) -> torch.Tensor:  # fmt: skip
        """Per-sample masked action MSE (N,) of the PLM (or `model`) on segments g, prompted by `prompt`."""
        model = self.plm if model is None else model
        pred = model(g["seg_states"], g["seg_actions"], g["seg_returns_to_go"], g["seg_timesteps"], g["seg_mask"],
                     prompt=prompt, **({"adapters": adapters} if adapters is not None else {}))  # fmt: skip
        m = g["seg_mask"].unsqueeze(-1)
        return ((pred - g["seg_actions"]) ** 2 * m).sum(dim=(1, 2)) / (m.sum(dim=(1, 2)) * pred.shape[-1]).clamp_min(1)

    # -- prompts and rollouts ----------------------------------------------------------------------
    def expert_prompts(self, datamodule, tasks: list[int], seed: int = 0) -> dict[int, Prompt]:
        """The plain few-shot tail prompts (the Prompt-DT baseline), normalised with the PLM's statistics."""
        out = {}
        for t, p in datamodule.tail_prompts(tasks, seed).items():
            p = p.to(self.device)
            out[t] = Prompt(self.normalise_states(p.states) * p.mask.unsqueeze(-1), p.actions, p.returns_to_go,
                            p.timesteps, p.mask)  # fmt: skip
        return out

    def rollout_policy(self, task: int | None = None):
        from promptdiff.rollout import DTPolicy

        return DTPolicy(self.policy_model(task), self.state_mean.cpu().numpy(), self.state_std.cpu().numpy(),
                        self.family.rtg_scale, device=self.device)  # fmt: skip

    def policy_model(self, task: int | None) -> nn.Module:
        """The network the rollout drives (the frozen PLM unless a method changes it per task)."""
        return self.plm
