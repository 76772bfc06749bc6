"""Gradient combination of Prompt Diffuser, on hand-computed vectors."""

import math

import pytest
import torch

from promptdiff.optim import combine_gradients, project_conflicting


def t(*v):
    return torch.tensor(v, dtype=torch.float32)


def test_conflicting_guidance_loses_its_component_along_the_diffusion_gradient():
    g_dm, g_p = [t(1.0, 0.0)], [t(-1.0, 1.0)]  # cos = -1/sqrt(2)
    g, stats = combine_gradients(g_dm, g_p, "projection")
    # g_p' = g_p - (<g_p,g_dm>/|g_dm|^2) g_dm = (-1, 1) + (1, 0) = (0, 1); g = (1, 0) + (0, 1)
    assert torch.allclose(g[0], t(1.0, 1.0))
    assert stats["projected"] == 1.0
    assert stats["cosine"] == pytest.approx(-1 / math.sqrt(2), abs=1e-6)


def test_projection_spans_parameters_as_one_vector():
    # two parameters; the conflict only shows over the concatenation (1, 2 | 3) . (-2, 0 | 0)
    g_dm = [t(1.0, 2.0), t(3.0)]
    g_p = [t(-2.0, 0.0), t(0.0)]
    g, _ = combine_gradients(g_dm, g_p, "projection", lam=1.0)
    coef = -2.0 / 14.0
    expect_p = [t(-2.0, 0.0) - coef * t(1.0, 2.0), t(0.0) - coef * t(3.0)]
    assert torch.allclose(g[0], t(1.0, 2.0) + expect_p[0])
    assert torch.allclose(g[1], t(3.0) + expect_p[1])
    # the projected guidance is orthogonal to the diffusion gradient
    assert abs(sum(float((a * b).sum()) for a, b in zip(expect_p, g_dm))) < 1e-6


def test_aligned_gradients_are_summed_unchanged_unless_always():
    g_dm, g_p = [t(1.0, 0.0)], [t(1.0, 1.0)]
    g, stats = combine_gradients(g_dm, g_p, "projection", lam=0.5)
    assert torch.allclose(g[0], t(1.5, 0.5)) and stats["projected"] == 0.0
    g, stats = combine_gradients(g_dm, g_p, "always", lam=0.5)
    assert torch.allclose(g[0], t(1.0, 0.5)) and stats["projected"] == 1.0  # (1,0) + 0.5 * (0,1)


def test_orthogonal_gradients_are_left_alone():
    g, stats = combine_gradients([t(2.0, 0.0)], [t(0.0, 3.0)], "projection")
    assert torch.allclose(g[0], t(2.0, 3.0))
    assert stats["cosine"] == 0.0 and stats["projected"] == 0.0


def test_zero_diffusion_gradient_leaves_guidance_unchanged():
    g, stats = combine_gradients([t(0.0, 0.0)], [t(-1.0, 2.0)], "always")
    assert torch.allclose(g[0], t(-1.0, 2.0)) and stats["projected"] == 0.0
    out, cos = project_conflicting([t(1.0)], [t(0.0)], always=True)
    assert torch.equal(out[0], t(1.0)) and cos == 0.0


def test_zero_guidance_gradient_gives_the_diffusion_gradient():
    g, _ = combine_gradients([t(1.0, -1.0)], [t(0.0, 0.0)], "projection")
    assert torch.allclose(g[0], t(1.0, -1.0))


def test_other_modes_and_missing_entries():
    g_dm, g_p = [t(1.0), None, t(2.0)], [t(-3.0), t(5.0), None]
    assert [x if x is None else float(x) for x in combine_gradients(g_dm, g_p, "dm_only")[0]] == [1.0, None, 2.0]
    assert [x if x is None else float(x) for x in combine_gradients(g_dm, g_p, "guidance_only", lam=2)[0]] == [
        -6.0, 10.0, None]
    assert [float(x) for x in combine_gradients(g_dm, g_p, "sum")[0]] == [-2.0, 5.0, 2.0]
    # projection: <g_p, g_dm> = -3 over the shared entry, |g_dm|^2 = 5, coef = -0.6
    g, _ = combine_gradients(g_dm, g_p, "projection")
    assert [round(float(x), 6) for x in g] == [1.0 + (-3.0 + 0.6), 5.0, 2.0 + 1.2]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="'pcgrad'"):
        combine_gradients([t(1.0)], [t(1.0)], "pcgrad")
    with pytest.raises(ValueError, match="length"):
        combine_gradients([t(1.0)], [t(1.0), t(2.0)])
