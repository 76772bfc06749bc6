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


class RankOptimiser(torch.optim.Optimizer):
    """The rank-based update as a torch optimiser over tensors that need no gradient.

    Per parameter p (a leaf tensor, updated in place), each round is

        queries = opt.ask(p)            # (m, *p.shape): p + u_i
        opt.tell(p, scores)             # scores (m,) of the queries, lower is better: sets p's direction
        opt.step()                      # every parameter with a direction moves: v <- momentum v + g, p <- p + lr v

    so Lightning counts `step()` as an optimiser step (and saves the optimiser's state, the perturbation
    generators and velocities included, in checkpoints). `round(p, score)` does one ask / tell / step for p.

    Args:
        params: tensors (or param groups) to optimise; a group may set its own `seed`.
        queries: m, Gaussian perturbations per round.
        std: sigma of the perturbations.
        momentum: factor on the previous direction.
        lr: step size.
        seed: seed of the perturbations of a group without its own (each parameter gets its own generator;
            with several parameters in one group the k-th is seeded seed + k).
    """

    def __init__(self, params, queries: int = 15, std: float = 1.0, momentum: float = 0.5, lr: float = 1e-4,
                 seed: int = 0):  # fmt: skip
        if queries < 2 or std <= 0 or lr <= 0 or not 0 <= momentum < 1:
            raise ValueError(f"need queries >= 2, std > 0, lr > 0, 0 <= momentum < 1 "
                             f"(got {queries}, {std}, {lr}, {momentum})")  # fmt: skip
        super().__init__(params, dict(queries=int(queries), std=float(std), momentum=float(momentum), lr=float(lr),
                                      seed=int(seed)))  # fmt: skip
        self._pending: dict[int, torch.Tensor] = {}  # id(p) -> perturbations of the last ask

    def _group(self, p: torch.Tensor) -> tuple[dict, int]:
        for group in self.param_groups:
            for k, q in enumerate(group["params"]):
                if q is p:
                    return group, k
        raise KeyError("tensor is not a parameter of this optimiser")

    def _generator(self, p: torch.Tensor) -> torch.Generator:
        group, k = self._group(p)
        state = self.state[p]
        gen = torch.Generator(device=p.device)
        if "rng_state" in state:
            gen.set_state(state["rng_state"].to(dtype=torch.uint8, device="cpu"))  # loading casts state to p.dtype
        else:
            gen.manual_seed(group["seed"] + k)
        return gen

    @torch.no_grad()
    def ask(self, p: torch.Tensor) -> torch.Tensor:
        """(m, *p.shape) query points p + u_i."""
        group, _ = self._group(p)
        gen = self._generator(p)
        u = torch.randn((group["queries"], *p.shape), generator=gen, device=p.device, dtype=p.dtype) * group["std"]
        self.state[p]["rng_state"] = gen.get_state()
        self._pending[id(p)] = u
        return p.detach().unsqueeze(0) + u

    @torch.no_grad()
    def tell(self, p: torch.Tensor, scores: torch.Tensor) -> None:
        """Set p's direction from the scores (m,) of its last `ask` (lower is better); `step()` applies it."""
        group, _ = self._group(p)
        u = self._pending.pop(id(p), None)
        if u is None:
            raise RuntimeError("tell() before ask()")
        scores = torch.as_tensor(scores).reshape(-1).cpu()
        if scores.numel() != group["queries"]:
            self._pending[id(p)] = u
            raise ValueError(f"expected {group['queries']} scores, got {scores.numel()}")
        w = centred_rank_weights(scores).to(p.dtype).to(p.device)
        self.state[p]["direction"] = torch.tensordot(w, u, dims=1) / (group["queries"] * group["std"])

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        """Move every parameter that has a direction; `closure` (if given) runs first, as torch optimisers do."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                g = state.pop("direction", None)
                if g is None:
                    continue
                v = state.get("velocity")
                state["velocity"] = g if v is None else group["momentum"] * v + g
                p.copy_(p + group["lr"] * state["velocity"])
        return loss

    def round(self, p: torch.Tensor, score: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """One ask / score / tell / step round for p; `score` maps (m, *p.shape) to (m,) scores. Returns p."""
        self.tell(p, score(self.ask(p)))
        self.step()
        return p
