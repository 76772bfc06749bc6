"""promptdiff.stats on hand-made runs: known interquartile means and probabilities of improvement, intervals
that contain the known value, stratification, and refusals."""

import numpy as np
import pytest

from promptdiff import stats


def _tasks(mu: float, tasks: int = 25, seeds: int = 5, sd: float = 0.05, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(mu, sd, seeds) for _ in range(tasks)]


def test_iqm_is_the_mean_of_the_middle_half_pooled_over_tasks():
    assert stats.iqm([np.arange(1.0, 9.0)]).value == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    assert stats.iqm([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]).value == pytest.approx(4.5)
    # pooled and sorted 0 0 0 1 1 1 1 100: two cut from each end, the outlier with them
    assert stats.iqm([[0.0, 0.0, 0.0, 100.0], [1.0, 1.0, 1.0, 1.0]]).value == pytest.approx(0.75)


def test_the_interval_contains_the_known_value_and_narrows_with_more_seeds():
    # 25 tasks x 5 seeds from a symmetric distribution centred at 0.8: the population IQM is 0.8
    few = stats.iqm(_tasks(0.8))
    assert few.low < 0.8 < few.high and few.low < few.value < few.high
    many = stats.iqm(_tasks(0.8, seeds=50))
    assert many.low < 0.8 < many.high and (many.high - many.low) < (few.high - few.low) / 2
    assert stats.iqm(_tasks(0.8), seed=1) != few  # the bootstrap's own seed is an argument ...
    assert stats.iqm(_tasks(0.8), seed=0) == few  # ... and fixes the interval


def test_resampling_is_stratified_by_task():
    # task A: five runs of 0, task B: one run of 1. Pooled and trimmed, the IQM is 0; a resample that let task B
    # draw more than its one run (or A fewer than five) could move it, a stratified one cannot
    est = stats.iqm([np.zeros(5), np.ones(1)])
    assert (est.value, est.low, est.high) == (0.0, 0.0, 0.0)
    est = stats.iqm([np.array([0.0, 0.1, 0.2, 0.3, 0.4]), np.ones(1)])
    assert est.high < 1.0 and est.low >= 0.0


def test_probability_of_improvement_known_values():
    assert stats.probability_of_improvement([[1.0, 2.0, 3.0]], [[2.0]]).value == pytest.approx(0.5)  # 0, tie, 1
    assert stats.probability_of_improvement([[3.0, 4.0]], [[1.0, 2.0]]).value == 1.0
    # averaged over tasks: task 1 certain (1.0), task 2 reversed (0.0)
    assert stats.probability_of_improvement([[2.0], [0.0]], [[1.0], [1.0]]).value == pytest.approx(0.5)
    better = stats.probability_of_improvement(_tasks(1.0), _tasks(0.5, seed=1))
    assert better.value == better.low == better.high == 1.0 and better.excludes(0.5)
    same = stats.probability_of_improvement(_tasks(1.0), _tasks(1.0, seed=1))
    assert same.low < 0.5 < same.high and not same.excludes(0.5)


def test_iqm_difference_and_separability():
    shifted = stats.iqm_difference(_tasks(1.0), _tasks(0.9, seed=1))
    assert shifted.low < 0.1 < shifted.high and shifted.excludes(0.0)
    noise = stats.iqm_difference(_tasks(1.0, seeds=3, sd=0.3), _tasks(0.98, seeds=3, sd=0.3, seed=1))
    assert not noise.excludes(0.0)  # 0.02 apart with sd 0.3 and 3 seeds: not separable


def test_performance_profile_is_a_falling_fraction():
    runs = [np.array([0.1, 0.5, 0.9]), np.array([0.2, 0.6])]
    profile = stats.performance_profile(runs, [0.0, 0.3, 0.55, 1.0])
    assert [p.value for p in profile] == pytest.approx([1.0, 0.6, 0.4, 0.0])
    assert all(p.low <= p.value <= p.high for p in profile)


def test_refusals():
    with pytest.raises(ValueError, match="at least one run"):
        stats.iqm([[1.0], []])
    with pytest.raises(ValueError, match="finite"):
        stats.iqm([[1.0, float("nan")]])
    with pytest.raises(ValueError, match="same tasks"):
        stats.probability_of_improvement([[1.0], [2.0]], [[1.0]])


def test_benchmark_tables_report_the_statistics_of_hand_made_cells(tmp_path):
    """Cells written the benchmark's way with known task scores: table.md's IQM, CI and verdict, stats.json and
    profile.png follow from them."""
    import json
    import types

    from promptdiff import benchmark as bench
    from promptdiff.envs import get_family

    cfg = bench.BenchmarkConfig(name="t", methods=[bench.MethodSpec("a", "conf/baselines/prompt_dt.yaml"),
                                                   bench.MethodSpec("b", "conf/baselines/mt_orl.yaml")],
                                families=["point_robot"], seeds=[0, 1, 2], out_dir=str(tmp_path), focus="b")  # fmt: skip
    tasks = get_family("point_robot").test_tasks
    base = {"a": 1.0, "b": 0.5}
    every = bench.cells(cfg)
    for cell in every:
        scores = {str(t): {"return_mean": 0.0, "normalised_score": base[cell.method.name] + 0.01 * cell.seed,
                           "returns": [0.0]} for t in tasks}  # fmt: skip
        cell.path.parent.mkdir(parents=True, exist_ok=True)
        cell.partial.write_text(json.dumps({"family": cell.family, "seed": cell.seed, "primary": "tuned",
                                            "tuned_parameters": 1, "sets": {"tuned": {"return_mean": 0.0, "tasks": scores}}}))
        argv = bench.command(cfg, cell, final_json=cell.partial)
        assert bench.finish_cell(cfg, bench.Running(cell, argv, types.SimpleNamespace(returncode=0), 1, 0.0))[0]
    outputs = bench.write_tables(cfg, every)

    # 15 runs per method (5 tasks x 3 seeds): 1.00, 1.01, 1.02 five times each; the middle half averages 1.01
    saved = json.loads((tmp_path / "t" / "stats.json").read_text())
    iqm_a = saved["methods"]["a"]["iqm"]
    assert iqm_a["value"] == pytest.approx(1.01) and iqm_a["low"] <= 1.01 <= iqm_a["high"]
    assert saved["methods"]["b"]["iqm"]["value"] == pytest.approx(0.51)
    assert saved["methods"]["a"]["poi"]["value"] == 0.0  # b (the focus) never beats a
    assert saved["focus"] == "b" and saved["cells"] == 6 and saved["cells_without_episodes"] == 0
    table = (tmp_path / "t" / "table.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| a | 15 (5) |"))
    assert "1.010 [" in row and row.endswith("| yes: a better |")
    assert (tmp_path / "t" / "profile.png").read_bytes()[:4] == b"\x89PNG" and outputs["profile"].endswith("profile.png")


def test_iqm_agrees_with_scipys_trimmed_mean():
    from scipy.stats import trim_mean  # scipy comes with scikit-learn; promptdiff.stats itself needs numpy only

    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 4, 5, 7, 8, 13, 66):
        x = rng.standard_cauchy(n)
        assert stats.iqm([x]).value == pytest.approx(trim_mean(x, 0.25))
