"""Benchmark tables written by `promptdiff benchmark` (`<out_dir>/<name>/table.csv`), read back and drawn.

The CSV has one row per (method, family): method, family, seeds, seeds_expected, return_mean,
return_std, score_mean, score_std, tuned_parameters, wall_time_s. Empty fields (a cell that never
finished, a family without dataset card) are read as None; a method with no finished seed on a
family is drawn as "missing", never as a zero bar.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

PREFERRED = ("ant_dir_ood", "table1", "table1_quick")
_NUMBERS = ("seeds", "seeds_expected", "return_mean", "return_std", "score_mean", "score_std", "tuned_parameters",
            "wall_time_s")  # fmt: skip


def find_benchmark_table(results: str | Path = "results", names: tuple[str, ...] = PREFERRED) -> Path | None:
    """The first `<results>/<name>/table.csv` that exists, in the order of `names`, else any table there
    (alphabetically), else None."""
    root = Path(results)
    for name in names:
        path = root / name / "table.csv"
        if path.is_file():
            return path
    found = sorted(root.glob("*/table.csv")) if root.is_dir() else []
    return found[0] if found else None


def read_benchmark_table(path: str | Path) -> list[dict]:
    """Rows of a benchmark table.csv with numbers parsed (empty fields: None)."""
    rows = []
    with open(path, newline="") as fh:
        for raw in csv.DictReader(fh):
            row = dict(raw)
            for key in _NUMBERS:
                if key in row:
                    value = row[key]
                    row[key] = None if value in (None, "", "None") else float(value)
            rows.append(row)
    if not rows:
        raise ValueError(f"{path} holds no rows")
    missing = {"method", "family", "return_mean"} - set(rows[0])
    if missing:
        raise ValueError(f"{path} is not a benchmark table: no column {', '.join(sorted(missing))}")
    return rows


def benchmark_figure(rows: list[dict], value: str = "auto", title: str = "") -> Figure:
    """Grouped bars: one group per family, one bar per method, mean +- std over seeds.

    value: "score" (normalised score), "return", or "auto" (score when every finished row has one).
    """
    finished = [r for r in rows if (r.get("seeds") or 0) > 0 and r.get("return_mean") is not None]
    if value == "auto":
        value = "score" if finished and all(r.get("score_mean") is not None for r in finished) else "return"
    if value not in ("score", "return"):
        raise ValueError(f"value must be 'score', 'return' or 'auto', got {value!r}")
    methods = list(dict.fromkeys(r["method"] for r in rows))
    families = list(dict.fromkeys(r["family"] for r in rows))
    by = {(r["method"], r["family"]): r for r in rows}
    width = 0.8 / len(methods)
    x = np.arange(len(families))
    fig = Figure(figsize=(max(5.5, 1.5 * len(families) + 0.35 * len(methods) + 2.0), 3.6))
    ax = fig.subplots()
    for i, m in enumerate(methods):
        pos = x + (i - (len(methods) - 1) / 2) * width
        for xi, f in zip(pos, families):
            r = by.get((m, f))
            mean = None if r is None or not r.get("seeds") else r.get(f"{value}_mean")
            if mean is None:
                ax.text(xi, 0.0, "missing", rotation=90, ha="center", va="bottom", fontsize=6, color="0.4")
        means = [(by.get((m, f)) or {}).get(f"{value}_mean") if (by.get((m, f)) or {}).get("seeds") else None
                 for f in families]  # fmt: skip
        stds = [(by.get((m, f)) or {}).get(f"{value}_std") for f in families]
        ax.bar(pos, [0.0 if v is None else v for v in means], width, label=m, capsize=2,
               yerr=[0.0 if (v is None or s is None) else s for v, s in zip(means, stds)])  # fmt: skip
    ax.set_xticks(x, families)
    ax.set_ylabel("normalised score" if value == "score" else "mean return")
    if value == "score":
        ax.axhline(1.0, color="0.5", lw=0.8, ls="--")
    ax.axhline(0.0, color="0.5", lw=0.6)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def performance_profile_figure(profiles: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                               title: str = "") -> Figure:  # fmt: skip
    """Performance profiles (Agarwal et al. 2021): per method, the fraction of runs whose normalised score
    exceeds tau, against tau, with its confidence band. `profiles`: method -> (taus, fraction, low, high)."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for name, (taus, frac, low, high) in profiles.items():
        (line,) = ax.plot(taus, frac, label=name, linewidth=1.6)
        ax.fill_between(taus, low, high, color=line.get_color(), alpha=0.18, linewidth=0)
    ax.set_xlabel("normalised score tau")
    ax.set_ylabel("fraction of runs with score > tau")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    return fig
