"""Zeroth-order rank optimiser (Prompt-Tuning DT's update), on a quadratic."""

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
    opt = RankOptimiser(torch.zeros(2, 3), queries=15, std=0.3, momentum=0.5, lr=0.5, seed=0)
    start = float(f(opt.x[None]))
    for _ in range(300):
        opt.step(f)
    end = float(f(opt.x[None]))
    assert end < 0.02 * start, (start, end)


def test_only_the_order_of_scores_matters_and_seed_reproduces():
    target = torch.tensor([0.7, -0.3])
    f = quadratic(target)
    runs = []
    for transform in (lambda s: s, lambda s: torch.exp(3 * s) + 5):
        opt = RankOptimiser(torch.zeros(2), queries=6, std=0.5, lr=0.1, seed=4)
        for _ in range(20):
            opt.step(lambda xs: transform(f(xs)))
        runs.append(opt.x)
    assert torch.equal(runs[0], runs[1])
    other = RankOptimiser(torch.zeros(2), queries=6, std=0.5, lr=0.1, seed=5)
    for _ in range(20):
        other.step(f)
    assert not torch.equal(other.x, runs[0])


def test_reference_defaults_move_little_and_misuse_is_named():
    opt = RankOptimiser(torch.zeros(4))  # m 15, std 1.0, momentum 0.5, lr 1e-4
    opt.step(quadratic(torch.ones(4)))
    assert 0 < float(opt.x.abs().max()) < 1e-3
    with pytest.raises(RuntimeError, match="before ask"):
        RankOptimiser(torch.zeros(2)).tell(torch.zeros(15))
    with pytest.raises(ValueError, match="expected 15 scores"):
        o = RankOptimiser(torch.zeros(2))
        o.ask()
        o.tell(torch.zeros(3))
