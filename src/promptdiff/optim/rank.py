"""Zeroth-order, rank-based optimisation of a tensor (Prompt-Tuning DT's prompt update).

Each step draws m Gaussian perturbations u_1..u_m (std sigma) of the current point x, scores
every x + u_i with a black-box function (lower is better; for Prompt-Tuning DT the frozen
PLM's action loss on the few-shot data), and moves along the rank-weighted mean direction:

    w_i   = centred rank of u_i: +1/2 for the best query, -1/2 for the worst, evenly between
    g     = sum_i w_i u_i / (m sigma)
    v    <- momentum v + g
    x    <- x + lr v

Only the ORDER of the scores matters, so the update is invariant to any increasing transform
of the score. No gradients of the score are needed.
"""

from __future__ import annotations

from typing import Callable

import torch


def centred_rank_weights(scores: torch.Tensor) -> torch.Tensor:
    """(m,) scores, lower is better -> (m,) weights in [-1/2, 1/2], best +1/2, summing to 0."""
    m = scores.numel()
    if m < 2:
        raise ValueError(f"rank weights need at least 2 queries, got {m}")
    order = torch.argsort(scores.reshape(-1), stable=True)  # best first
    ranks = torch.empty(m, dtype=torch.float64)
    ranks[order] = torch.arange(m, dtype=torch.float64)
    return 0.5 - ranks / (m - 1)


class RankOptimiser:
    def __init__(self, x: torch.Tensor, queries: int = 15, std: float = 1.0, momentum: float = 0.5,
                 lr: float = 1e-4, seed: int = 0):  # fmt: skip
        """
        Args:
            x: the starting point (any shape; a copy is optimised).
            queries: m, Gaussian perturbations per step.
            std: sigma of the perturbations.
            momentum: factor on the previous direction.
            lr: step size.
            seed: seed of the perturbations (a step is reproducible).
        """
        if queries < 2 or std <= 0 or lr <= 0 or not 0 <= momentum < 1:
            raise ValueError(f"need queries >= 2, std > 0, lr > 0, 0 <= momentum < 1 "
                             f"(got {queries}, {std}, {lr}, {momentum})")  # fmt: skip
        self.x = x.detach().clone()
        self.m, self.std, self.momentum, self.lr = int(queries), float(std), float(momentum), float(lr)
        self.v = torch.zeros_like(self.x)
        self.gen = torch.Generator(device=self.x.device).manual_seed(int(seed))
        self._u: torch.Tensor | None = None

    def ask(self) -> torch.Tensor:
        """(m, *x.shape) query points x + u_i."""
        self._u = torch.randn((self.m, *self.x.shape), generator=self.gen, device=self.x.device,
                              dtype=self.x.dtype) * self.std  # fmt: skip
        return self.x.unsqueeze(0) + self._u

    def tell(self, scores: torch.Tensor) -> torch.Tensor:
        """Update x from the scores (m,) of the last `ask` (lower is better); return the new x."""
        if self._u is None:
            raise RuntimeError("tell() before ask()")
        scores = torch.as_tensor(scores).reshape(-1).cpu()
        if scores.numel() != self.m:
            raise ValueError(f"expected {self.m} scores, got {scores.numel()}")
        w = centred_rank_weights(scores).to(self.x.dtype).to(self.x.device)
        g = torch.tensordot(w, self._u, dims=1) / (self.m * self.std)
        self.v = self.momentum * self.v + g
        self.x = self.x + self.lr * self.v
        self._u = None
        return self.x

    def step(self, score: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """One ask / score / tell round; `score` maps (m, *x.shape) to (m,) scores."""
        return self.tell(score(self.ask()))
