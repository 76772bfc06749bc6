"""A DDPM forward process and its DDIM / ancestral samplers, over flat vectors x (B, D).

`GaussianDiffusion` holds only the noise schedule (buffers, no trainable parameters, no
optimiser). The network it trains or samples from is passed in on every call and follows the
model protocol

    model(xt (B, D) float, t (B,) int64, cond, drop) -> (B, D)

where `cond` is an opaque object handed through unchanged (for Prompt Diffuser a dict of tensors
with leading dimension B) and `drop` is None or a (B,) bool tensor marking the rows whose
condition the model must replace by its null condition (classifier-free guidance). What the
model outputs depends on `prediction`: the noise eps ("epsilon") or the clean sample x0
("sample").

Diffusion steps are indexed t = 0 .. S-1, t = 0 being the least noisy:

    x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps,   abar_t = prod_{i <= t} (1 - beta_i).

The samplers never switch the model between train and eval mode: that is the caller's job.
"""

from __future__ import annotations

import math

import torch
from torch import nn

SCHEDULES = ("cosine", "linear")
PREDICTIONS = ("epsilon", "sample")


def cosine_betas(steps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Betas (S,) float64 of the improved-DDPM cosine schedule abar(t) = cos^2(((t/S) + s) / (1 + s) * pi/2)."""
    grid = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((grid + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


def linear_betas(steps: int, max_beta: float = 0.999) -> torch.Tensor:
    """Betas (S,) float64 from 1e-4 to 0.02 as defined for 1000 steps, rescaled by 1000 / S for S steps."""
    scale = 1000.0 / steps
    return torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64).clamp(max=max_beta)


class GaussianDiffusion(nn.Module):
    """DDPM process over x (B, D) with S steps; buffers only.

    Args:
        steps: S, the number of training diffusion steps.
        schedule: "cosine" (Nichol & Dhariwal, s = 0.008, betas <= 0.999) or "linear" (1e-4 .. 0.02, scaled to S).
        prediction: "epsilon" (the model predicts the noise) or "sample" (it predicts x0).
        clip_sample: if not None, every x0 estimate is clamped to [-clip_sample, clip_sample].
    """

    def __init__(self, steps: int = 50, schedule: str = "cosine", prediction: str = "epsilon",
                 clip_sample: float | None = None):  # fmt: skip
        super().__init__()
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}, expected one of {SCHEDULES}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}, expected one of {PREDICTIONS}")
        if clip_sample is not None and not clip_sample > 0:
            raise ValueError(f"clip_sample must be None or > 0, got {clip_sample!r}")
        self.steps, self.schedule, self.prediction = steps, schedule, prediction
        self.clip_sample = None if clip_sample is None else float(clip_sample)

        betas = cosine_betas(steps) if schedule == "cosine" else linear_betas(steps)
        alphas = 1 - betas
        abar = torch.cumprod(alphas, dim=0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        buffers = {
            "betas": betas,
            "alphas_cumprod": abar,
            "alphas_cumprod_prev": abar_prev,
            "sqrt_alphas_cumprod": abar.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1 - abar).sqrt(),
            "sqrt_recip_alphas_cumprod": abar.rsqrt(),
            "sqrt_recipm1_alphas_cumprod": (1 / abar - 1).sqrt(),
            # q(x_{t-1} | x_t, x0) = N(coef1 x0 + coef2 x_t, posterior_variance); the variance is 0 at t = 0
            "posterior_variance": betas * (1 - abar_prev) / (1 - abar),
            "posterior_mean_coef1": betas * abar_prev.sqrt() / (1 - abar),
            "posterior_mean_coef2": (1 - abar_prev) * alphas.sqrt() / (1 - abar),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.to(torch.float32))

    def extra_repr(self) -> str:
        return f"steps={self.steps}, schedule={self.schedule!r}, prediction={self.prediction!r}, " \
               f"clip_sample={self.clip_sample}"  # fmt: skip

    # ------------------------------------------------------------------ per-step coefficients

    @staticmethod
    def _at(buffer: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """buffer[t] (B,) reshaped to (B, 1, ...) so that it broadcasts against `like` (B, ...)."""
        return buffer[t].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def _clip(self, x0: torch.Tensor) -> torch.Tensor:
        return x0 if self.clip_sample is None else x0.clamp(-self.clip_sample, self.clip_sample)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """x0 (B, D), t (B,) int64, noise (B, D) (None: fresh N(0, I)) -> xt (B, D)."""
        if noise is None:
            noise = torch.randn_like(x0)
        a, b = self._at(self.sqrt_alphas_cumprod, t, x0), self._at(self.sqrt_one_minus_alphas_cumprod, t, x0)
        return a * x0 + b * noise

    def predict_x0(self, model_out: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The x0 estimate (B, D) from a model output (B, D) at xt (B, D), step t (B,); clipped if clip_sample.

        Differentiable in model_out (except where clipping saturates).
        """
        if self.prediction == "sample":
            x0 = model_out
        else:
            a, b = self._at(self.sqrt_recip_alphas_cumprod, t, xt), self._at(self.sqrt_recipm1_alphas_cumprod, t, xt)
            x0 = a * xt - b * model_out
        return self._clip(x0)

    def predict_eps(self, model_out: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The noise estimate (B, D) from a model output (B, D) at xt (B, D), step t (B,).

        "epsilon" without clip_sample: the model output itself. Otherwise the noise implied by the
        (clipped) x0 estimate, eps = (xt - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t), so that the samplers
        always step with a consistent (x0_hat, eps) pair.
        """
        if self.prediction == "epsilon" and self.clip_sample is None:
            return model_out
        x0 = self.predict_x0(model_out, xt, t)
        a, b = self._at(self.sqrt_alphas_cumprod, t, xt), self._at(self.sqrt_one_minus_alphas_cumprod, t, xt)
        return (xt - a * x0) / b

    # ------------------------------------------------------------------ training

    def training_terms(self, model, x0: torch.Tensor, cond, t: torch.Tensor, noise: torch.Tensor,
                       drop: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """The denoising loss and the x0 estimate for one batch.

        Args:
            model: follows the model protocol (see the module docstring).
            x0: clean samples (B, D).
            cond: the condition, passed to the model unchanged.
            t: diffusion steps (B,) int64 in [0, S-1].
            noise: (B, D) N(0, I) noise.
            drop: None or (B,) bool, rows trained with the null condition.

        Returns:
            loss (B,): mean over D of the squared error to the target (noise or x0, per `prediction`).
            x0_hat (B, D): predict_x0 of the model output, differentiable w.r.t. the model's parameters.
        """
        xt = self.q_sample(x0, t, noise)
        out = model(xt, t, cond, drop)
        target = noise if self.prediction == "epsilon" else x0
        loss = ((out - target) ** 2).flatten(1).mean(dim=1)
        return loss, self.predict_x0(out, xt, t)

    # ------------------------------------------------------------------ sampling

    def _guided(self, model, xt: torch.Tensor, t: torch.Tensor, cond, guidance_scale: float) -> torch.Tensor:
        """Model output (B, D) with classifier-free guidance: one call if guidance_scale == 1, else two."""
        if guidance_scale == 1.0:
            return model(xt, t, cond, None)
        B = xt.shape[0]
        out_cond = model(xt, t, cond, torch.zeros(B, dtype=torch.bool, device=xt.device))
        out_uncond = model(xt, t, cond, torch.ones(B, dtype=torch.bool, device=xt.device))
        return out_uncond + guidance_scale * (out_cond - out_uncond)

    def _initial_noise(self, shape, generator: torch.Generator | None) -> torch.Tensor:
        shape = tuple(int(s) for s in shape)
        if len(shape) != 2:
            raise ValueError(f"shape must be (B, D), got {shape}")
        return torch.randn(shape, generator=generator, device=self.betas.device, dtype=torch.float32)

    def ddim_timesteps(self, num_steps: int | None = None) -> torch.Tensor:
        """The n evenly spaced training steps DDIM visits, descending from S-1 (int64 (n,)); n = 1 gives [S-1]."""
        n = self.steps if num_steps is None else num_steps
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.steps:
            raise ValueError(f"num_steps must be an int in [1, {self.steps}], got {num_steps!r}")
        if n == 1:
            return torch.tensor([self.steps - 1], dtype=torch.long)
        return torch.linspace(self.steps - 1, 0, n, dtype=torch.float64).round().long()

    @torch.no_grad()
    def ddim_sample(self, model, cond, shape: tuple[int, int], num_steps: int | None = None, eta: float = 0.0,
                    guidance_scale: float = 1.0, generator: torch.Generator | None = None,
                    return_chain: bool = False):  # fmt: skip
        """DDIM sampling (Song et al., 2021) over `num_steps` evenly spaced steps (None: all S).

        Starts from N(0, I) drawn with `generator` on the buffers' device. With eta > 0 each step
        but the last adds sigma_t z, z drawn from the same generator, with
        sigma_t = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev); eta = 1 over
        all S steps is ancestral DDPM sampling.

        Args:
            model: follows the model protocol; cond is passed to it unchanged.
            shape: (B, D).
            guidance_scale: w; 1.0 makes one model call per step (drop None), otherwise two
                (drop all False, drop all True) combined as out_uncond + w (out_cond - out_uncond).

        Returns:
            x0 (B, D), or with return_chain (x0, chain (n + 1, B, D)): chain[0] the initial noise,
            chain[k] the sample after k steps, chain[-1] = x0.
        """
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta!r}")
        steps = self.ddim_timesteps(num_steps).tolist()
        x = self._initial_noise(shape, generator)
        B, device = x.shape[0], x.device
        chain = [x] if return_chain else None
        for i, step in enumerate(steps):
            last = i == len(steps) - 1
            t = torch.full((B,), step, dtype=torch.long, device=device)
            out = self._guided(model, x, t, cond, guidance_scale)
            x0 = self.predict_x0(out, x, t)
            eps = self.predict_eps(out, x, t)
            abar = self.alphas_cumprod[step]
            abar_prev = torch.ones((), device=device) if last else self.alphas_cumprod[steps[i + 1]]
            sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).clamp_min(0).sqrt()
            x = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma**2).clamp_min(0).sqrt() * eps
            if eta > 0 and not last:
                x = x + sigma * torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
            if return_chain:
                chain.append(x)
        return (x, torch.stack(chain)) if return_chain else x

    @torch.no_grad()
    def ddpm_sample(self, model, cond, shape: tuple[int, int], guidance_scale: float = 1.0,
                    generator: torch.Generator | None = None, return_chain: bool = False):  # fmt: skip
        """Ancestral DDPM sampling over all S steps, x_{t-1} ~ q(x_{t-1} | x_t, x0_hat).

        Same arguments and return convention as `ddim_sample` (chain (S + 1, B, D)); noise is drawn
        from `generator` for the start and for every step but the last (t = 0 has no variance).
        """
        x = self._initial_noise(shape, generator)
        B, device = x.shape[0], x.device
        chain = [x] if return_chain else None
        for step in range(self.steps - 1, -1, -1):
            t = torch.full((B,), step, dtype=torch.long, device=device)
            out = self._guided(model, x, t, cond, guidance_scale)
            x0 = self.predict_x0(out, x, t)
            x = self._at(self.posterior_mean_coef1, t, x) * x0 + self._at(self.posterior_mean_coef2, t, x) * x
            if step > 0:
                z = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
                x = x + self._at(self.posterior_variance, t, x).sqrt() * z
            if return_chain:
                chain.append(x)
        return (x, torch.stack(chain)) if return_chain else x
