"""Aggregate statistics for few-seed benchmark results (Agarwal et al., NeurIPS 2021, "Deep RL at the
Edge of the Statistical Precipice").

Scores are given per stratum: a list with one 1-D array per (family, test task), holding one score per
run (seed) of that task. Every estimate comes with a 95% stratified bootstrap confidence interval:
each resample draws, within every stratum independently, as many runs as it has, with replacement
(`scipy.stats.bootstrap` with one sample per stratum, percentile intervals), so tasks with few
seeds keep their weight and no task's runs stand in for another's.

- `iqm`: the interquartile mean, the mean of the middle 50% of all runs pooled (25% trimmed from
  each end): robust to outlying runs, less noisy than the median.
- `probability_of_improvement(x, y)`: the chance that a run of method X on a task beats a run of Y
  on the same task (ties count half), averaged over tasks; 0.5 means no difference.
- `iqm_difference(x, y)`: IQM(X) - IQM(Y), with X's and Y's runs resampled independently.
- `performance_profile`: the fraction of runs scoring above each threshold tau.

A difference is "separable" when its interval excludes no difference (0 for the IQM difference,
0.5 for the probability of improvement).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its confidence interval."""

    value: float
    low: float
    high: float

    def excludes(self, null: float) -> bool:
        return not self.low <= null <= self.high

    def format(self, digits: int = 3) -> str:
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _strata(runs) -> list[np.ndarray]:
    out = [np.asarray(r, np.float64).reshape(-1) for r in runs]
    if not out or any(r.size == 0 for r in out):
        raise ValueError("every stratum (task) needs at least one run")
    if any(not np.isfinite(r).all() for r in out):
        raise ValueError("scores must be finite")
    return out


def _iqm(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean of what is left after cutting int(n / 4) values from each end (scipy.stats.trim_mean(x, 0.25))."""
    values = np.sort(values, axis=axis)
    n = values.shape[axis]
    cut = int(0.25 * n)
    return np.take(values, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def _bootstrap(samples: list[np.ndarray], statistic, seed: int, resamples: int) -> tuple[float, float]:
    """Percentile interval of `statistic(*samples, axis=-1)` when every sample is resampled within itself (with
    replacement, its own size): `resamples` draws at once, the statistic evaluated along the last axis."""
    rng = np.random.default_rng(seed)
    drawn = [s[rng.integers(0, s.size, (resamples, s.size))] for s in samples]
    values = statistic(*drawn, axis=-1)
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def iqm(runs, seed: int = 0, resamples: int = RESAMPLES) -> Estimate:
    """Interquartile mean of all runs pooled, with its stratified bootstrap interval."""
    strata = _strata(runs)

    def statistic(*samples, axis=-1):
        return _iqm(np.concatenate(samples, axis=axis), axis=axis)

    return Estimate(float(statistic(*strata)), *_bootstrap(strata, statistic, seed, resamples))


def _poi(xs: list[np.ndarray], ys: list[np.ndarray], axis: int = -1) -> np.ndarray:
    """Mean over tasks of P(X > Y) + P(X = Y) / 2 between the runs of X and Y on the task (batched over the
    leading axes of each array)."""
    per_task = []
    for x, y in zip(xs, ys):
        x, y = np.moveaxis(x, axis, -1)[..., :, None], np.moveaxis(y, axis, -1)[..., None, :]
        per_task.append(((x > y) + 0.5 * (x == y)).mean(axis=(-2, -1)))
    return np.mean(per_task, axis=0)


def _pairs(x_runs, y_runs) -> tuple[list[np.ndarray], list[np.ndarray]]:
    xs, ys = _strata(x_runs), _strata(y_runs)
    if len(xs) != len(ys):
        raise ValueError(f"the two methods have {len(xs)} and {len(ys)} strata (tasks): compare them on the same tasks")
    return xs, ys


def probability_of_improvement(x_runs, y_runs, seed: int = 0, resamples: int = RESAMPLES) -> Estimate:
    """P(X > Y) averaged over the strata both are given on (in the same order), with its interval."""
    xs, ys = _pairs(x_runs, y_runs)
    n = len(xs)

    def statistic(*samples, axis=-1):
        return _poi(list(samples[:n]), list(samples[n:]), axis=axis)

    return Estimate(float(statistic(*xs, *ys)), *_bootstrap([*xs, *ys], statistic, seed, resamples))


def iqm_difference(x_runs, y_runs, seed: int = 0, resamples: int = RESAMPLES) -> Estimate:
    """IQM(X) - IQM(Y) with its interval (each method's runs resampled within each stratum)."""
    xs, ys = _pairs(x_runs, y_runs)
    n = len(xs)

    def statistic(*samples, axis=-1):
        return (_iqm(np.concatenate(samples[:n], axis=axis), axis=axis)
                - _iqm(np.concatenate(samples[n:], axis=axis), axis=axis))  # fmt: skip

    return Estimate(float(statistic(*xs, *ys)), *_bootstrap([*xs, *ys], statistic, seed, resamples))


def performance_profile(runs, taus, seed: int = 0, resamples: int = RESAMPLES) -> list[Estimate]:
    """For each tau, the fraction of runs (pooled, every stratum weighted by its runs) that score above tau."""
    strata = _strata(runs)
    out = []
    for tau in np.asarray(taus, np.float64):

        def statistic(*samples, axis=-1, tau=tau):
            return (np.concatenate(samples, axis=axis) > tau).mean(axis=axis)

        out.append(Estimate(float(statistic(*strata)), *_bootstrap(strata, statistic, seed, resamples)))
    return out


__all__ = ["Estimate", "iqm", "probability_of_improvement", "iqm_difference", "performance_profile", "CONFIDENCE"]
