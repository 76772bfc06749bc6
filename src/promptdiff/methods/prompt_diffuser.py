"""Prompt Diffuser: a conditional diffusion model generates the frozen PLM's trajectory prompt.

The module holds the frozen PLM (eval mode, no gradients into it) and the trainable diffuser(s):
one diffuser per test task (`split: test`, few-shot tuning; `shared: true` pools the test tasks
into one), or one shared by all training tasks (`split: train`, stage-1 pre-training whose weights
can initialise the few-shot stage, `init_diffuser`).
`split: val` runs the few-shot protocol on held-out training tasks, to choose hyper-parameters
without looking at the test tasks.

Every training step, for each task's batch (see `promptdiff.data.fewshot`):

    x0 = window (states normalised with the PLM's statistics, actions, rewards / rtg_scale)
    y  = (returns-to-go / rtg_scale, timesteps) of the window
    L_DM = || model output - target ||^2 at a random diffusion step (the step, the noise and the
           condition-dropout draw come from `diffusion_draws`, a generator keyed by the seed, the
           rank and the step, as the data module's batches are: a resumed run draws the same)
    L_P  = the frozen PLM's action MSE on K-step few-shot segments, prompted with the
           reconstruction of the diffuser's one-step estimate of x0 (differentiable)

Both gradients are computed separately (`torch.autograd.grad`), averaged over DDP ranks with
the strategy's `reduce`, combined per diffuser by `promptdiff.optim.combine_gradients`
(projection by default), clipped per diffuser, and written into `.grad` before the optimiser
step. A non-finite loss stops the run with the step and the loss named.

After (or during) training, `generate_prompts` samples each task's prompt from noise with DDIM,
y taken from a few-shot tail segment (the one the expert-prompt baseline uses), optionally the
best of n candidates by the PLM's action loss on the few-shot data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from promptdiff.envs import get_family
from promptdiff.methods.divergence import NonFiniteLossError, stop_if_not_finite  # noqa: F401 - NonFiniteLossError is re-exported
from promptdiff.methods.frozen_plm import PromptTuningMethod
from promptdiff.models import PromptCodec
from promptdiff.models.denoiser import PromptDenoiser
from promptdiff.models.diffusion import GaussianDiffusion
from promptdiff.optim import MODES, combine_gradients
from promptdiff.prompt import Prompt
from promptdiff.safe_io import first_non_finite, load_checkpoint


class PromptDiffuser(PromptTuningMethod):
    def __init__(self, family: str, plm: str | None = None, split: str = "test", context_length: int = 20,
                 prompt_length: int = 5, root: str = "datasets", tasks: list[int] | None = None,
                 init_diffuser: str | None = None, shared: bool = False, diffusion_steps: int = 50,
                 schedule: str = "cosine", prediction: str = "sample", denoiser: dict | None = None,
                 cond_dim: int = 64, cond_dropout: float = 0.0, guidance_scale: float = 1.0,
                 sample_steps: int = 10, clip_sample: float | None = None, combine: str = "projection",
                 lam: float = 1.0, lr: float = 1e-3, weight_decay: float = 0.0, grad_clip: float = 1.0,
                 best_of_n: int = 1, sample_seed: int = 0, condition: str = "tail", seed: int = 0):  # fmt: skip
        """
        Args:
            family: task family (linked from the data module).
            plm: frozen PLM checkpoint (default: <root>/<family>/plm.ckpt, the shipped one).
            split: "test" (one diffuser per test task, few-shot tuning), "val" (the same on held-out
                training tasks, `TaskFamily.val_tasks`: for choosing hyper-parameters) or "train" (one
                diffuser shared by the training tasks: stage-1 pre-training). Linked from the data module.
            context_length, prompt_length: K and L (linked from the data module; must match the PLM).
            root: dataset root (linked from the data module); the default PLM lives there.
            tasks: narrow the split to these tasks (linked from the data module).
            init_diffuser: checkpoint of a stage-1 run whose diffuser initialises every diffuser here
                (None: from scratch).
            shared: one diffuser for all tasks of the split, trained on their pooled few-shot data (True), or
                one per task (False, default). Always one on split "train" (stage 1).
            diffusion_steps: S, steps of the DDPM process.
            schedule: "cosine" or "linear" noise schedule.
            prediction: the denoiser predicts x0 ("sample", default) or the noise ("epsilon"). With the cosine
                schedule an epsilon model's x0 estimate at the noisiest steps multiplies its error by ~1000,
                which makes both the guidance prompt and DDIM sampling unstable without clip_sample.
            denoiser: the backbone, {class_path: ..., init_args: {...}} (default: MLPDenoiser with hidden 192,
                blocks 2, time_dim 64; promptdiff.models.TransformerDenoiser is the other shipped one).
            cond_dim: size of the encoded condition y that the backbone receives.
            cond_dropout: probability of training a row with the null condition (classifier-free guidance).
            guidance_scale: classifier-free guidance weight w at sampling (1: plain conditional).
            sample_steps: DDIM steps at generation.
            clip_sample: clamp x0 estimates to [-c, c] (None: no clamp).
            combine: how L_DM and L_P gradients combine: dm_only, guidance_only, sum, projection, always.
            lam: weight of the guidance gradient.
            lr, weight_decay: AdamW settings; grad_clip: max gradient norm per diffuser.
            best_of_n: generate n candidate prompts per task and keep the one with the lowest PLM action
                loss on the few-shot data.
            sample_seed: seed of prompt generation (noise of the sampler).
            condition: where the generation's y comes from: "tail" (returns-to-go and timesteps of a few-shot
                tail segment, as the expert prompt) or "target" (zero-shot: no target-task trajectory; the last
                L steps of an episode that earns the family's target return at a constant rate).
            seed: base seed of the diffusion loss's draws (linked from the data module's seed).
        """
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        if combine not in MODES:
            raise ValueError(f"combine must be one of {', '.join(MODES)}, got {combine!r}")
        if not 0.0 <= cond_dropout < 1.0:
            raise ValueError(f"cond_dropout must be in [0, 1), got {cond_dropout}")
        if best_of_n < 1:
            raise ValueError(f"best_of_n must be >= 1, got {best_of_n}")
        if condition not in ("tail", "target"):
            raise ValueError(f"condition must be 'tail' or 'target', got {condition!r}")
        if condition == "target" and best_of_n > 1:
            raise ValueError("best_of_n ranks candidates on few-shot data, which zero-shot generation "
                             "(condition 'target') does not have: set best_of_n 1")  # fmt: skip
        self.load_plm(family, plm, context_length, prompt_length, tasks=get_family(family).split_tasks(split, tasks),
                      root=root)  # fmt: skip
        fam = self.family
        self.codec = PromptCodec(fam.obs_dim, fam.act_dim, prompt_length)
        self.diffusion = GaussianDiffusion(diffusion_steps, schedule=schedule, prediction=prediction,
                                           clip_sample=clip_sample)  # fmt: skip
        n = 1 if split == "train" or shared else len(self.tasks)
        self.diffusers = nn.ModuleList([self._new_denoiser() for _ in range(n)])
        if init_diffuser:
            self._init_from_stage1(init_diffuser)

    # -- construction ----------------------------------------------------------------------------
    def _new_denoiser(self) -> PromptDenoiser:
        hp = self.hparams
        return PromptDenoiser(self.codec.x_dim, prompt_length=hp.prompt_length, max_timestep=self.family.horizon,
                              cond_dim=hp.cond_dim, backbone=hp.denoiser)  # fmt: skip

    def _init_from_stage1(self, path: str) -> None:
        path = Path(path)
        make = f"promptdiff fit --config conf/diffuser_pretrain/{self.family.name}.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"init_diffuser checkpoint {path} not found: make it with `{make}` (and use its "
                                    "last.ckpt), or set init_diffuser: null")  # fmt: skip
        ck = load_checkpoint(path, what="init_diffuser checkpoint")
        theirs = ck.get("hyper_parameters") if isinstance(ck, dict) else None
        for key, mine in (("family", self.family.name), ("prompt_length", self.hparams.prompt_length)):
            if isinstance(theirs, dict) and key in theirs and theirs[key] != mine:  # before any weight is copied
                raise ValueError(f"init_diffuser checkpoint {path} was trained with {key} {theirs[key]!r}, this run "
                                 f"has {mine!r}: use the stage-1 diffuser of this setting (`{make}`)")  # fmt: skip
        prefix = "diffusers.0."
        state = ck.get("state_dict") if isinstance(ck, dict) else None
        weights = {k[len(prefix):]: v for k, v in (state or {}).items() if k.startswith(prefix)}
        if not weights:
            raise ValueError(f"init_diffuser checkpoint {path} holds no diffuser weights")
        bad = first_non_finite(weights)
        if bad is not None:
            raise ValueError(f"init_diffuser checkpoint {path}: weight {bad!r} holds NaN or inf (a diverged run?)")
        for d in self.diffusers:
            try:
                d.load_state_dict(weights)
            except RuntimeError as err:
                raise ValueError(f"init_diffuser checkpoint {path} does not fit this diffuser: {err}") from err

    def _serves(self, served: list[int]) -> bool:
        return served == self.tasks or (self.hparams.split == "train" and set(served) <= set(self.tasks))


    def diffusion_draws(self, T: int, B: int, key: tuple[int, ...]) -> dict[str, torch.Tensor]:
        """The diffusion loss's randomness for T tasks x B windows, from the generator (seed, *key):
        t_uniform (T, B) in [0, 1) (mapped to a diffusion step), noise (T, B, x_dim) ~ N(0, I), drop_uniform
        (T, B) in [0, 1) (classifier-free condition dropout). Training uses key (0, rank, step)."""
        rng = np.random.default_rng([self.hparams.seed, *key])
        draws = {"t_uniform": rng.random((T, B)),
                 "noise": rng.standard_normal((T, B, self.codec.x_dim), dtype=np.float32),
                 "drop_uniform": rng.random((T, B))}  # fmt: skip
        return {k: torch.from_numpy(v).to(self.device) for k, v in draws.items()}

    def _draws_for(self, batch: dict, stage: int, index: int) -> dict[str, torch.Tensor]:
        T, B = batch["window"]["timesteps"].shape[:2]
        rank = self.trainer.global_rank if self._trainer is not None else 0
        return self.diffusion_draws(T, B, (stage, rank, index))

    def _groups(self, batch: dict, draws: dict):
        """(diffuser, per-group tensors) pairs: one group per task, or all tasks in one (stage 1)."""
        win = batch["window"]
        S = self.diffusion.steps
        x0 = self.codec.encode(self.normalise_states(win["states"]), win["actions"], win["rewards"])
        t = (draws["t_uniform"] * S).long().clamp_(0, S - 1)
        drop = draws["drop_uniform"] < self.hparams.cond_dropout
        fields = {"x0": x0, "rtg": win["returns_to_go"], "ts": win["timesteps"], "t": t, "noise": draws["noise"],
                  "drop": drop, **self.normalised_segments(batch)}  # fmt: skip
        if len(self.diffusers) == 1:
            yield self.diffusers[0], {k: v.flatten(0, 1) for k, v in fields.items()}
        else:
            for j, d in enumerate(self.diffusers):
                yield d, {k: v[j] for k, v in fields.items()}

    # -- losses ------------------------------------------------------------------------------------
    def losses(self, batch: dict, draws: dict,
               need_guidance: bool = True) -> tuple[list[torch.Tensor], list[torch.Tensor]]:  # fmt: skip
        """Per diffuser: L_DM and L_P (scalars), in the order of `self.diffusers`, with the diffusion `draws`.

        The diffusers run one by one; the frozen PLM runs once on every group's segments together.
        """
        groups = list(self._groups(batch, draws))
        l_dm, x0_hats = [], []
        for diffuser, g in groups:
            cond = {"returns_to_go": g["rtg"], "timesteps": g["ts"]}
            drop = g["drop"] if self.hparams.cond_dropout > 0 else None
            per_dm, x0_hat = self.diffusion.training_terms(diffuser, g["x0"], cond, g["t"], g["noise"], drop)
            l_dm.append(per_dm.mean())
            x0_hats.append(x0_hat)
        cat = {k: torch.cat([g[k] for _, g in groups]) for k in groups[0][1] if k.startswith("seg_") or k in ("rtg", "ts")}
        with torch.set_grad_enabled(need_guidance and torch.is_grad_enabled()):
            prompt = self.codec.to_prompt(torch.cat(x0_hats), cat["rtg"], cat["ts"])
            per_p = self.plm_action_loss(prompt, cat)
        l_p = [chunk.mean() for chunk in per_p.split([x.shape[0] for x in x0_hats])]
        return l_dm, l_p

    # -- training ----------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> None:
        hp = self.hparams
        opt = self.optimizers()
        mode = hp.combine
        l_dm, l_p = self.losses(batch, self._draws_for(batch, 0, self.global_step), need_guidance=mode != "dm_only")
        L_dm, L_p = torch.stack(l_dm).sum(), torch.stack(l_p).sum()
        for name, value in (("L_DM", L_dm), ("L_P", L_p)):
            stop_if_not_finite(value, name, self.global_step)
        params = [list(d.parameters()) for d in self.diffusers]
        flat = [p for group in params for p in group]
        g_dm = torch.autograd.grad(L_dm, flat, retain_graph=mode != "dm_only", allow_unused=True) \
            if mode != "guidance_only" else [None] * len(flat)  # fmt: skip
        g_p = torch.autograd.grad(L_p, flat, allow_unused=True) if mode != "dm_only" else [None] * len(flat)
        g_dm, g_p = self._all_reduce(g_dm, flat), self._all_reduce(g_p, flat)
        cosines, projected, i = [], [], 0
        for group in params:
            n = len(group)
            g, stats = combine_gradients(g_dm[i:i + n], g_p[i:i + n], mode=mode, lam=hp.lam)
            for p, gi in zip(group, g):
                p.grad = None if gi is None else gi.detach().clone()
            torch.nn.utils.clip_grad_norm_(group, hp.grad_clip)
            cosines.append(stats["cosine"])
            projected.append(stats["projected"])
            i += n
        opt.step()
        opt.zero_grad(set_to_none=True)
        self.log("train/L_DM", L_dm / len(l_dm), prog_bar=True)
        self.log("train/L_P", L_p / len(l_p), prog_bar=True)
        self.log("train/grad_cosine", float(np.mean(cosines)))
        self.log("train/projected_fraction", float(np.mean(projected)))

    def _all_reduce(self, grads, params) -> list[torch.Tensor | None]:
        """Mean over DDP ranks (identity on one process); None entries stay None on every rank."""
        if self._trainer is None or self.trainer.world_size == 1:
            return list(grads)
        full = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
        flat = torch.cat([g.reshape(-1) for g in full])
        flat = self.trainer.strategy.reduce(flat, reduce_op="mean")
        out, i = [], 0
        for g, p in zip(grads, params):
            n = p.numel()
            out.append(None if g is None else flat[i:i + n].view_as(p))
            i += n
        return out

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        l_dm, l_p = self.losses(batch, self._draws_for(batch, 1, batch_idx), need_guidance=False)
        self.log("val/L_DM", torch.stack(l_dm).mean(), sync_dist=True)
        self.log("val/L_P", torch.stack(l_p).mean(), sync_dist=True)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        l_dm, l_p = self.losses(batch, self._draws_for(batch, 2, batch_idx), need_guidance=False)
        self.log("test/L_DM", torch.stack(l_dm).mean(), sync_dist=True)
        self.log("test/L_P", torch.stack(l_p).mean(), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.diffusers.parameters(), lr=self.hparams.lr,
                                 weight_decay=self.hparams.weight_decay, foreach=True)

    # -- generation --------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_x0(self, diffuser: PromptDenoiser, rtg: torch.Tensor, ts: torch.Tensor, seed: int,
                  return_chain: bool = False):  # fmt: skip
        """DDIM samples x0 (N, x_dim) for conditions rtg, ts (N, L); optionally the whole chain."""
        hp = self.hparams
        gen = torch.Generator(device=self.device).manual_seed(int(seed))
        return self.diffusion.ddim_sample(diffuser, {"returns_to_go": rtg, "timesteps": ts}, (rtg.shape[0], self.codec.x_dim),
                                          num_steps=hp.sample_steps, guidance_scale=hp.guidance_scale, generator=gen,
                                          return_chain=return_chain)  # fmt: skip

    def diffuser_for(self, task: int) -> PromptDenoiser:
        return self.diffusers[self.tasks.index(task)] if len(self.diffusers) > 1 else self.diffusers[0]

    @torch.no_grad()
    def generate_prompts(self, datamodule, tasks: list[int], seed: int = 0) -> dict[int, Prompt]:
        """One generated prompt (P = 1, PLM units) per task; y from the few-shot tail of prompt seed `seed`
        (or, with condition "target", from the target return alone)."""
        zero_shot = self.hparams.condition == "target"
        tails = None if zero_shot else datamodule.tail_prompts(tasks, seed)
        n = self.hparams.best_of_n
        out = {}
        was_training = self.training
        self.eval()
        for k, task in enumerate(tasks):
            if zero_shot:
                rtg, ts = self.target_condition()
            else:
                tail = tails[task].to(self.device)
                rtg, ts = tail.returns_to_go[..., 0], tail.timesteps
            rtg, ts = rtg.expand(n, -1), ts.expand(n, -1)
            x0 = self.sample_x0(self.diffuser_for(task), rtg, ts, seed=self.hparams.sample_seed * 100_003 + seed * 1009 + k)
            prompts = self.codec.to_prompt(x0, rtg, ts)
            best = 0
            if n > 1:
                batch = datamodule.draw(np.random.default_rng([self.hparams.sample_seed, seed, task]))
                j = datamodule.tasks.index(task)
                seg = {k: v[j].to(self.device) for k, v in self.normalised_segments(batch).items()}
                B = seg["seg_mask"].shape[0]
                losses = [self.plm_action_loss(prompts.index([i]).expand(B), seg).mean() for i in range(n)]
                best = int(torch.stack(losses).argmin())
            out[task] = prompts.index([best])
        self.train(was_training)
        return out

    def target_condition(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero-shot y (1, L): timesteps H - L .. H - 1 and the returns-to-go left there when the target
        return G* is earned at a constant rate over the horizon H: G* (H - t) / H, in PLM units."""
        fam, L = self.family, self.hparams.prompt_length
        ts = torch.arange(fam.horizon - L, fam.horizon, device=self.device)
        rtg = fam.target_return * (fam.horizon - ts) / fam.horizon / fam.rtg_scale
        return rtg.float().unsqueeze(0), ts.unsqueeze(0)

    def rollout_prompt_sets(self, datamodule, tasks: list[int], seed: int = 0) -> dict[str, dict[int, Prompt]]:
        """The prompt sets the rollout callback compares: generated and the expert baseline."""
        return {"generated": self.generate_prompts(datamodule, tasks, seed),
                "expert": self.expert_prompts(datamodule, tasks, seed)}  # fmt: skip

    @torch.no_grad()
    def denoising_chain(self, datamodule, task: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """States of the reverse chain (n+1, L, obs_dim), noise first, and the expert prompt's (L, obs_dim),
        both in normalised units, for the task's generated prompt (prompt seed `seed`)."""
        expert = self.expert_prompts(datamodule, [task], seed)[task]
        rtg, ts = expert.returns_to_go[..., 0], expert.timesteps
        was_training = self.training
        self.eval()
        _, chain = self.sample_x0(self.diffuser_for(task), rtg, ts, seed=seed, return_chain=True)
        self.train(was_training)
        states = self.codec.decode(chain[:, 0])[0]
        return states.cpu().numpy(), expert.states[0].cpu().numpy()
