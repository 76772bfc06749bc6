"""Multi-task pre-training of the Prompt Decision Transformer (the PLM).

AdamW with a linear learning-rate warm-up, masked action MSE; gradient clipping (0.25 in the
reference) is the Trainer's `gradient_clip_val`. The checkpoint carries everything needed to
rebuild the policy without the config: the architecture and family (hyper-parameters) and the
PLM's units (`checkpoint["plm_units"]`: training-task state statistics, return scale, timestep
clip, K and L; also kept as the buffers state_mean / state_std), see `PromptDTPretrain.load_policy`.
Checkpoints written before the units were saved rebuild them from the buffers and the family.
"""

from __future__ import annotations

import lightning as L
import torch

from promptdiff.envs import get_family
from promptdiff.methods.divergence import stop_if_not_finite
from promptdiff.models.prompt_dt import PromptDT, masked_action_mse
from promptdiff.units import PLMUnits


class PromptDTPretrain(L.LightningModule):
    def __init__(self, family: str, width: int = 128, layers: int = 3, heads: int = 1, mlp_width: int = 512,
                 dropout: float = 0.1, context_length: int = 20, prompt_length: int = 5, max_timestep: int = 1000,
                 lr: float = 1e-4, weight_decay: float = 1e-4, warmup_steps: int = 10_000,
                 compile: bool = False):  # fmt: skip
        """
        Args:
            family: task family; fixes observation/action sizes, return scale and target.
            width, layers, heads, mlp_width, dropout: transformer size (reference: 128, 3, 1, 512, 0.1).
            context_length: K, the most recent steps the policy sees.
            prompt_length: L, the steps of a trajectory prompt.
            max_timestep: size of the timestep embedding table.
            lr, weight_decay: AdamW settings.
            warmup_steps: linear warm-up of the learning rate from 0.
            compile: run the PLM's forward pass through `torch.compile` (inductor) in training and in the
                evaluator. Off by default: on the 2-core development CPU it made a step slower, after 40-60 s
                of compilation (docs/benchmarks.md); measure on your hardware with
                `benchmarks/plm_step_vs_reference.py --compile`.
        """
        super().__init__()
        self.save_hyperparameters()
        fam = get_family(family)
        self.family = fam
        self.model = PromptDT(fam.obs_dim, fam.act_dim, width=width, layers=layers, heads=heads, mlp_width=mlp_width,
                              dropout=dropout, context_length=context_length, prompt_length=prompt_length,
                              max_timestep=max_timestep)  # fmt: skip
        self.register_buffer("state_mean", torch.zeros(fam.obs_dim))
        self.register_buffer("state_std", torch.ones(fam.obs_dim))
        self._units: PLMUnits | None = None
        # a compiled function, not a module: the checkpoint keeps the model's own parameter names
        self._compiled_forward = torch.compile(self.model.forward) if compile else None

    # -- the PLM's units travel with the checkpoint --------------------------------------------
    @property
    def units(self) -> PLMUnits:
        """The units this PLM reads its inputs in (from the data module, or the checkpoint)."""
        if self._units is None:  # a checkpoint written before units were saved: rebuild them
            hp = self.hparams
            self._units = PLMUnits(self.state_mean.cpu().double().numpy(), self.state_std.cpu().double().numpy(),
                                   self.family.rtg_scale, self.family.horizon, hp.context_length, hp.prompt_length)  # fmt: skip
        return self._units

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and dm is not None and hasattr(dm, "plm_units"):
            self._units = dm.plm_units()
            self.state_mean.copy_(torch.as_tensor(self._units.state_mean, dtype=torch.float32))
            self.state_std.copy_(torch.as_tensor(self._units.state_std, dtype=torch.float32))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["torch_rng_state"] = torch.get_rng_state()  # dropout continues identically on resume
        checkpoint["plm_units"] = self.units.to_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])
        if "plm_units" in checkpoint:
            self._units = PLMUnits.from_dict(checkpoint["plm_units"])

    # -- training ------------------------------------------------------------------------------
    def model_step(self, batch: dict) -> torch.Tensor:
        seg = batch["segment"]
        pred = (self._compiled_forward or self.model)(seg["states"], seg["actions"], seg["returns_to_go"], seg["timesteps"], seg["mask"],
                          prompt=batch["prompt"])  # fmt: skip
        return masked_action_mse(pred, seg["actions"], seg["mask"])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.model_step(batch)
        stop_if_not_finite(loss, "train/action_mse", self.global_step)
        self.log("train/action_mse", loss, prog_bar=True)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.log("val/action_mse", self.model_step(batch), prog_bar=True, sync_dist=True)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.log("test/action_mse", self.model_step(batch), sync_dist=True)

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        warmup = max(1, hp.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- using the result (the evaluation side of the method contract) -------------------------
    primary_set = "expert"
    policy_per_task = False

    @property
    def rollout_tasks(self) -> list[int]:
        return list(self.family.test_tasks)

    def rollout_prompt_sets(self, datamodule, tasks: list[int], seed: int = 0) -> dict[str, dict]:
        """The expert prompts of the tasks (tails of their prompt pools), already in this PLM's units."""
        return {"expert": datamodule.tail_prompts(tasks, seed)}

    def rollout_policy(self, task: int | None = None):
        """The policy as the batched evaluator drives it (puts the model in eval mode)."""
        from promptdiff.rollout import DTPolicy

        return DTPolicy(self.model, self.units, device=self.device, compile=self.hparams.compile)

    @classmethod
    def load_policy(cls, checkpoint_path: str, map_location="cpu") -> "PromptDTPretrain":
        """The pre-trained module from a checkpoint alone (no config), in eval mode, with ITS OWN hyper-parameters.

        The file is read by `promptdiff.safe_io.load_checkpoint` (no code runs from it); weights that are not
        all finite (a diverged run) are refused, naming the parameter. LightningCLI instantiates a method inside
        a context that hands the method's hyper-parameters to every LightningModule built meanwhile; a PLM built
        in a method's constructor would record the method's family and sizes instead of its own, so the context
        is cleared around the construction."""
        import inspect

        from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters

        from promptdiff.safe_io import UnreadableFileError, first_non_finite, load_checkpoint

        ck = load_checkpoint(checkpoint_path, what="PLM checkpoint", map_location=map_location)
        hp, weights = (ck.get("hyper_parameters"), ck.get("state_dict")) if isinstance(ck, dict) else (None, None)
        if not isinstance(hp, dict) or not isinstance(weights, dict) or "family" not in hp:
            raise UnreadableFileError(checkpoint_path, "not a PLM checkpoint (no pre-training hyper-parameters "
                                      "and state_dict)")  # fmt: skip
        bad = first_non_finite(weights)
        if bad is not None:
            raise UnreadableFileError(checkpoint_path, f"weight {bad!r} holds NaN or inf (a diverged pre-training "
                                      "run?); refusing it as a PLM")  # fmt: skip
        accepted = inspect.signature(cls.__init__).parameters
        token = _given_hyperparameters.set(None)
        try:
            module = cls(**{k: v for k, v in hp.items() if k in accepted})
        finally:
            _given_hyperparameters.reset(token)
        module.on_load_checkpoint(ck)
        module.load_state_dict(weights)
        return module.to(map_location).eval()
