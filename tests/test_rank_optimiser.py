"""Zeroth-order rank optimiser (Prompt-Tuning DT's update), a torch optimiser, on a quadratic."""

import pytest
import torch

from promptdiff.optim import RankOptimiser, centred_rank_weights


def quadratic(target):
    return lambda xs: ((xs - target) ** 2).flatten(1).sum(1)


def test_rank_weights_best_positive_sum_zero():
    w = centred_rank_weights(torch.tensor([3.0, 1.0, 2.0]))
    assert w.tolist() == [-0.5, 0.5, 0.0]
    assert float(w.sum()) == 0.0
    with pytest.raises(ValueError):
        centred_rank_weights(torch.tensor([1.0]))


def test_minimises_a_quadratic():
    target = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.0, -1.0]])
    f = quadratic(target)
    x = torch.zeros(2, 3)
    opt = RankOptimiser([x], queries=15, std=0.3, momentum=0.5, lr=0.5, seed=0)
    start = float(f(x[None]))
    for _ in range(300):
        opt.round(x, f)
    end = float(f(x[None]))
    assert end < 0.02 * start, (start, end)


def test_only_the_order_of_scores_matters_and_seed_reproduces():
    target = torch.tensor([0.7, -0.3])
    f = quadratic(target)
    runs = []
    for transform in (lambda s: s, lambda s: torch.exp(3 * s) + 5):
        x = torch.zeros(2)
        opt = RankOptimiser([x], queries=6, std=0.5, lr=0.1, seed=4)
        for _ in range(20):
            opt.round(x, lambda xs: transform(f(xs)))
        runs.append(x)
    assert torch.equal(runs[0], runs[1])
    other = torch.zeros(2)
    opt = RankOptimiser([other], queries=6, std=0.5, lr=0.1, seed=5)
    for _ in range(20):
        opt.round(other, f)
    assert not torch.equal(other, runs[0])


def test_parameters_move_independently_and_only_on_step():
    """Two parameters in their own groups (own seeds): step() moves exactly those that were told."""
    a, b = torch.zeros(3), torch.zeros(3)
    opt = RankOptimiser([{"params": [a], "seed": 1}, {"params": [b], "seed": 2}], queries=4, std=0.5, lr=0.1)
    opt.tell(a, quadratic(torch.ones(3))(opt.ask(a)))
    assert torch.equal(a, torch.zeros(3)), "tell() must not move the parameter"
    opt.step()
    assert not torch.equal(a, torch.zeros(3)) and torch.equal(b, torch.zeros(3))
    alone = torch.zeros(3)
    solo = RankOptimiser([{"params": [alone], "seed": 1}], queries=4, std=0.5, lr=0.1)
    solo.round(alone, quadratic(torch.ones(3)))
    assert torch.equal(alone, a), "a parameter's update depends on its own seed and scores only"


def test_state_dict_resumes_the_same_perturbations():
    """The generators and velocities are optimiser state: an optimiser rebuilt from the state_dict (as Lightning
    does on resume) continues exactly as the original."""
    f = quadratic(torch.tensor([1.0, -1.0]))
    x = torch.zeros(2)
    opt = RankOptimiser([x], queries=5, std=0.5, lr=0.2, momentum=0.5, seed=3)
    for _ in range(3):
        opt.round(x, f)
    y = x.clone()
    again = RankOptimiser([y], queries=5, std=0.5, lr=0.2, momentum=0.5, seed=3)
    again.load_state_dict(opt.state_dict())
    for _ in range(4):
        opt.round(x, f)
        again.round(y, f)
    assert torch.equal(x, y)


def test_reference_defaults_move_little_and_misuse_is_named():
    x = torch.zeros(4)
    RankOptimiser([x]).round(x, quadratic(torch.ones(4)))  # m 15, std 1.0, momentum 0.5, lr 1e-4
    assert 0 < float(x.abs().max()) < 1e-3
    y = torch.zeros(2)
    with pytest.raises(RuntimeError, match="before ask"):
        RankOptimiser([y]).tell(y, torch.zeros(15))
    o = RankOptimiser([y])
    o.ask(y)
    with pytest.raises(ValueError, match="expected 15 scores"):
        o.tell(y, torch.zeros(3))
    with pytest.raises(KeyError, match="not a parameter"):
        o.ask(torch.zeros(2))
