"""Combining the diffusion gradient and the guidance gradient (gradient projection).

Pure functions on lists of gradient tensors (one entry per parameter, None for a parameter a
loss does not reach). The two gradients are treated as single vectors over all parameters of
the group: their cosine is computed over the concatenation of every entry.

Modes (`combine_gradients`):

    dm_only         g = g_dm
    guidance_only   g = lam * g_p
    sum             g = g_dm + lam * g_p
    projection      g = g_dm + lam * g_p',  g_p' = g_p - (<g_p, g_dm> / |g_dm|^2) g_dm  when
                    <g_p, g_dm> < 0 (they conflict), else g_p' = g_p
    always          as projection, but the guidance is projected whatever the sign

The projection removes from the guidance gradient its component along the diffusion
gradient, so a step never undoes denoising progress to follow the frozen policy's loss. A zero
diffusion gradient leaves the guidance unchanged (there is no direction to protect).
"""

from __future__ import annotations

from typing import Sequence

import torch

MODES = ("dm_only", "guidance_only", "sum", "projection", "always")
Grads = Sequence[torch.Tensor | None]



def _flat(grads: Grads, like: Grads) -> torch.Tensor:
    """All entries as one float64 vector; None entries (of either list) count as zeros."""
    parts = []
    for g, o in zip(grads, like):
        ref = g if g is not None else o
        if ref is None:
            continue
        parts.append(g.reshape(-1) if g is not None else torch.zeros(ref.numel(), dtype=ref.dtype, device=ref.device))
    if not parts:
        return torch.zeros(0, dtype=torch.float64)
    return torch.cat(parts).double()


def dot(a: Grads, b: Grads) -> torch.Tensor:
    """<a, b> over all entries (None entries count as zero), accumulated in float64."""
    return torch.dot(_flat(a, b), _flat(b, a)).cpu()


def project_conflicting(g_p: Grads, g_dm: Grads, always: bool = False) -> tuple[list[torch.Tensor | None], float]:
    """Project g_p onto the plane orthogonal to g_dm where they conflict (or always).

    Returns the (possibly) projected g_p and the cosine between the ORIGINAL g_p and g_dm
    (0 when either is zero).
    """
    if len(g_p) != len(g_dm):
        raise ValueError(f"gradient lists differ in length: {len(g_p)} vs {len(g_dm)}")
    vp, vd = _flat(g_p, g_dm), _flat(g_dm, g_p)
    pd, dd, pp = torch.dot(vp, vd).cpu(), torch.dot(vd, vd).cpu(), torch.dot(vp, vp).cpu()
    cos = float(pd / (dd.sqrt() * pp.sqrt())) if dd > 0 and pp > 0 else 0.0
    if dd == 0 or (not always and pd >= 0):
        return list(g_p), cos
    coef = float(pd / dd)
    out = []
    for p, d in zip(g_p, g_dm):
        if p is None:
            out.append(None if d is None else -coef * d)
        else:
            out.append(p if d is None else p - coef * d.to(p.dtype))
    return out, cos


def combine_gradients(g_dm: Grads, g_p: Grads, mode: str = "projection", lam: float = 1.0,
                      ) -> tuple[list[torch.Tensor | None], dict[str, float]]:  # fmt: skip
    """The update direction from the diffusion gradient g_dm and the guidance gradient g_p.

    Returns (g, stats) with stats = {"cosine": cos(g_p, g_dm), "projected": 1.0 if g_p was
    changed else 0.0}. Entries that are None in both inputs stay None.
    """
    if mode not in MODES:
        raise ValueError(f"unknown gradient combination {mode!r}; choose one of {', '.join(MODES)}")
    if len(g_p) != len(g_dm):
        raise ValueError(f"gradient lists differ in length: {len(g_dm)} vs {len(g_p)}")
    if mode == "dm_only":
        return list(g_dm), {"cosine": _cos(g_dm, g_p), "projected": 0.0}
    if mode == "guidance_only":
        return [None if g is None else lam * g for g in g_p], {"cosine": _cos(g_dm, g_p), "projected": 0.0}
    if mode == "sum":
        proj, cos, changed = list(g_p), _cos(g_dm, g_p), False
    else:
        proj, cos = project_conflicting(g_p, g_dm, always=mode == "always")
        changed = any(a is not b for a, b in zip(proj, g_p))
    out = []
    for d, p in zip(g_dm, proj):
        if d is None and p is None:
            out.append(None)
        elif p is None:
            out.append(d)
        elif d is None:
            out.append(lam * p)
        else:
            out.append(d + lam * p)
    return out, {"cosine": cos, "projected": float(changed)}


def _cos(a: Grads, b: Grads) -> float:
    va, vb = _flat(a, b), _flat(b, a)
    ab, aa, bb = torch.dot(va, vb), torch.dot(va, va), torch.dot(vb, vb)
    return float(ab / (aa.sqrt() * bb.sqrt())) if aa > 0 and bb > 0 else 0.0
