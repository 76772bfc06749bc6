"""Figures of individual prompts: the denoising chain, generated vs expert states, returns per task.

States are in the PLM's normalised units (training-task statistics), the units the diffuser
samples in: pure diffusion noise there is a standard normal, so its spread is the yardstick of
"still noise" in every figure below.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

TASK_COLORS = "tab10"


def _cmap(name: str = TASK_COLORS):
    import matplotlib

    return matplotlib.colormaps[name]


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write `fig` as a PNG (parent folders created; written to a temporary name first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    tmp.replace(path)
    return path


def denoising_figure(chain_states: np.ndarray, expert_states: np.ndarray | None = None, dims: int = 8,
                     title: str = "") -> Figure:  # fmt: skip
    """The reverse chain of one generated prompt (the paper's Figure 4).

    One panel per prompt step: each of the first `dims` state dimensions against the denoising
    step, from pure noise (step 0, left) to the generated prompt (right); the expert few-shot
    prompt's value of the same dimension is marked with an x at the right edge, and the grey band
    is +-2, where 95 % of the starting noise lies. With an expert prompt, a last panel shows per
    prompt step the root-mean-square gap between the chain and the expert prompt over ALL state
    dimensions: about sqrt(1 + s^2) for noise (s: the expert's spread), small once it has settled.

    chain_states: (n+1, L, obs_dim), noise first; expert_states: (L, obs_dim) or None.
    """
    steps, L_, obs_dim = chain_states.shape
    shown = list(range(min(dims, obs_dim)))
    colors = _cmap()
    panels = L_ + (expert_states is not None)
    fig = Figure(figsize=(3.0 * panels, 3.0))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    x = np.arange(steps)
    for l in range(L_):
        ax = axes[l]
        ax.axhspan(-2.0, 2.0, color="0.93", zorder=0)
        for k, d in enumerate(shown):
            ax.plot(x, chain_states[:, l, d], color=colors(k % 10), lw=1.2, label=f"s[{d}]")
            if expert_states is not None:
                ax.scatter([steps - 1 + 0.4], [expert_states[l, d]], color=colors(k % 10), marker="x", s=25)
        ax.set_title(f"prompt step {l + 1}")
        ax.set_xlabel("denoising step (0 = noise)")
        if l:
            ax.sharey(axes[0])
            ax.tick_params(labelleft=False)
    axes[0].set_ylabel("state (normalised)")
    axes[L_ - 1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if expert_states is not None:
        ax = axes[-1]
        gap = np.sqrt(((chain_states - expert_states[None]) ** 2).mean(axis=2))  # (n+1, L)
        for l in range(L_):
            ax.plot(x, gap[:, l], lw=1.2, color="0.2", alpha=0.35 + 0.65 * (l + 1) / L_, label=f"step {l + 1}")
        ax.set_ylim(bottom=0.0)
        ax.set_title("gap to expert prompt")
        ax.set_ylabel(f"RMS over the {obs_dim} state dims")
        ax.set_xlabel("denoising step (0 = noise)")
        ax.legend(fontsize=6, title="prompt", title_fontsize=6)
    if title:
        fig.suptitle(title + ("   (x: expert prompt)" if expert_states is not None else ""))
    fig.tight_layout()
    return fig


def prompt_states_figure(rows: dict[str, dict[int, np.ndarray]], reference: str | None = None, dims: int | None = None,
                         title: str = "", limit: float = 3.0) -> Figure:  # fmt: skip
    """Prompt states as heat maps: one row of panels per test task, one column per prompt kind.

    Each panel shows a prompt's states (L steps x state dimensions, normalised units) on one
    diverging colour scale clipped to +-`limit`. Put e.g. the diffusion's starting noise, the
    generated prompt and the expert prompt side by side: a generated prompt that learned its task
    reproduces the expert's pattern, which noise does not. With `reference` (a key of `rows`),
    every other panel's title gives its root-mean-square gap to the reference prompt of that task.

    rows: kind -> task -> states (L, obs_dim); every kind has the same tasks.
    dims: draw the first `dims` dimensions (default all).
    """
    kinds = list(rows)
    tasks = list(rows[kinds[0]])
    obs_dim = np.asarray(rows[kinds[0]][tasks[0]]).shape[-1]
    shown = obs_dim if dims is None else min(dims, obs_dim)
    L_ = np.asarray(rows[kinds[0]][tasks[0]]).shape[0]
    fig = Figure(figsize=(0.13 * shown * len(kinds) + 1.6, (0.16 * L_ + 0.55) * len(tasks) + 0.9), layout="constrained")
    axes = fig.subplots(len(tasks), len(kinds), squeeze=False)
    image = None
    for i, task in enumerate(tasks):
        for j, kind in enumerate(kinds):
            ax = axes[i][j]
            states = np.asarray(rows[kind][task])[:, :shown]
            image = ax.imshow(states, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
            label = kind
            if reference is not None and kind != reference:
                ref = np.asarray(rows[reference][task])[:, :shown]
                label += f"  (RMS gap {np.sqrt(np.mean((states - ref) ** 2)):.2f})"
            ax.set_title(label, fontsize=8)
            ax.set_yticks([0, L_ - 1], ["1", str(L_)], fontsize=6)
            ax.set_xticks([])
            if j == 0:
                ax.set_ylabel(f"task {task}\nstep", fontsize=8)
        axes[-1][0].set_xlabel("state dimension", fontsize=8)
    for j in range(len(kinds)):
        axes[-1][j].set_xticks(np.arange(0, shown, max(1, shown // 6)))
        axes[-1][j].tick_params(labelsize=6)
        axes[-1][j].set_xlabel("state dimension", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    if image is not None:
        bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, pad=0.02)
        bar.set_label("state (normalised)", fontsize=8)
        bar.ax.tick_params(labelsize=6)
    return fig


def _task_returns(result: dict) -> dict:
    """task -> (mean, std or None) from an `evaluate` result or one set of a rollout summary."""
    out = {}
    for t, entry in result["tasks"].items():
        std = entry.get("return_std")
        out[int(t)] = (float(entry["return_mean"]), None if std is None else float(std))
    return out


def returns_figure(results: dict[str, dict], title: str = "", ylabel: str = "return") -> Figure:
    """Mean return per task (and over tasks) of several prompt sets, as grouped bars.

    results: set name -> an `evaluate` result ({"tasks": {t: {"return_mean", "return_std"}}}) or one
    set of a rollout summary ({"tasks": {t: {"return_mean"}}}); error bars show the std over episodes
    where it is known.
    """
    names = list(results)
    per = {n: _task_returns(results[n]) for n in names}
    tasks = list(per[names[0]])
    labels = [str(t) for t in tasks] + ["mean"]
    fig = Figure(figsize=(max(4.5, 0.9 * len(labels) * max(1, len(names) / 2) + 1.5), 3.2))
    ax = fig.subplots()
    width = 0.8 / len(names)
    x = np.arange(len(labels))
    for i, n in enumerate(names):
        means = [per[n][t][0] for t in tasks]
        stds = [per[n][t][1] for t in tasks]
        values = means + [float(np.mean(means))]
        err = None if any(s is None for s in stds) else stds + [0.0]
        ax.bar(x + (i - (len(names) - 1) / 2) * width, values, width, yerr=err, capsize=2, label=f"{n} prompt")
    ax.set_xticks(x, labels)
    ax.set_xlabel("test task")
    ax.set_ylabel(ylabel)
    ax.axhline(0.0, color="0.5", lw=0.6)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
