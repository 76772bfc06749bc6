"""A 2-D map of prompts (the paper's Figure 5): many prompts of several tasks and methods, projected.

1. `prompt_points` turns (method, task, prompt) triples into one feature vector per prompt, in one
   of two spaces:

   * "trajectory": the prompt's states and actions (PLM units: normalised states, raw actions),
     flattened over its L steps. This is the space the diffuser samples in, and the most direct
     one; returns-to-go and timesteps are left out because every method shares them for a task.
   * "tokens": the 3 L tokens the frozen PLM embeds the prompt into (`plm.embed_prompt`), flattened.
     Soft prompts (`PromptTokens`) exist only there, so a map that includes them must use it. For a
     trajectory prompt the embedding is an affine image of its (return-to-go, state, action) steps
     plus the timestep embeddings, so tasks that separate in one space separate in the other; the
     distances are the PLM's, not the data's.

   "auto" (default) picks "trajectory" when every prompt is a trajectory prompt, else "tokens".

2. `project_2d` projects with t-SNE (scikit-learn) when there are at least `min_tsne_points`
   prompts, and with PCA otherwise: t-SNE's neighbourhoods need a perplexity well below the
   number of points (here min(30, (n - 1) / 3)), and on a handful of points it only spreads them on
   a circle, while PCA is exact and honest there.

3. `prompt_space_figure` draws the map: colour = task, marker = method.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from matplotlib.figure import Figure

from promptdiff.models import Prompt, PromptTokens

MARKERS = ("o", "^", "s", "D", "v", "P", "X", "*", "<", ">")
SPACES = ("auto", "trajectory", "tokens")


@torch.no_grad()
def _features(prompt, space: str, plm) -> np.ndarray:
    if space == "trajectory":
        if not isinstance(prompt, Prompt):
            raise ValueError(f"a {type(prompt).__name__} has no states and actions: use space 'tokens'")
        x = torch.cat([prompt.states, prompt.actions], dim=-1)
    else:
        if isinstance(prompt, PromptTokens):
            x = prompt.tokens
        else:
            if plm is None:
                raise ValueError("space 'tokens' embeds trajectory prompts with the PLM: pass plm")
            device = next(plm.parameters()).device
            x = plm.embed_prompt(prompt.to(device)).tokens
    return x.detach().float().reshape(x.shape[0], -1).cpu().numpy()


def prompt_points(triples: Iterable[tuple[str, int, Prompt | PromptTokens]], plm=None,
                  space: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:  # fmt: skip
    """Feature vectors of prompts.

    triples: (method label, task, prompt) with P >= 1 rows each (every row is one point).
    plm: the frozen `PromptDT`, needed for space "tokens" when trajectory prompts are present.
    Returns X (N, D) float, tasks (N,) int, labels (N,) str and the space used.
    """
    triples = list(triples)
    if space not in SPACES:
        raise ValueError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
    if not triples:
        raise ValueError("no prompts to place")
    if space == "auto":
        space = "trajectory" if all(isinstance(p, Prompt) for _, _, p in triples) else "tokens"
    feats, tasks, labels = [], [], []
    for label, task, prompt in triples:
        f = _features(prompt, space, plm)
        feats.append(f)
        tasks += [int(task)] * f.shape[0]
        labels += [str(label)] * f.shape[0]
    widths = {f.shape[1] for f in feats}
    if len(widths) != 1:
        raise ValueError(f"prompts of different sizes cannot share one map: feature widths {sorted(widths)}")
    return np.concatenate(feats), np.asarray(tasks), np.asarray(labels), space


def project_2d(X: np.ndarray, method: str = "auto", seed: int = 0, min_tsne_points: int = 20
               ) -> tuple[np.ndarray, str]:  # fmt: skip
    """2-D coordinates (N, 2) of the rows of X and the method used ("t-SNE" or "PCA").

    method: "tsne", "pca" or "auto" (t-SNE from `min_tsne_points` rows on, else PCA).
    """
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    if method not in ("auto", "tsne", "pca"):
        raise ValueError(f"method must be 'auto', 'tsne' or 'pca', got {method!r}")
    if method == "auto":
        method = "tsne" if n >= min_tsne_points else "pca"
    X = X - X.mean(axis=0, keepdims=True)
    if method == "tsne":
        if n < 4:
            raise ValueError(f"t-SNE needs at least 4 points, got {n}: use PCA")
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
        Y = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                 random_state=seed).fit_transform(X)  # fmt: skip
        return np.asarray(Y), "t-SNE"
    from sklearn.decomposition import PCA

    k = min(2, n, X.shape[1])
    Y = np.zeros((n, 2))
    if k > 0 and np.any(X):
        Y[:, :k] = PCA(n_components=k, random_state=seed).fit_transform(X)
    return Y, "PCA"


def prompt_space_figure(Y: np.ndarray, tasks: np.ndarray, labels: np.ndarray, title: str = "",
                        projection: str = "") -> Figure:  # fmt: skip
    """Scatter of projected prompts: colour = task, marker = method (label)."""
    import matplotlib
    from matplotlib.lines import Line2D

    cmap = matplotlib.colormaps["tab10" if len(set(tasks.tolist())) <= 10 else "tab20"]
    task_list = sorted(set(int(t) for t in tasks))
    label_list = list(dict.fromkeys(labels.tolist()))
    fig = Figure(figsize=(6.4, 4.6))
    ax = fig.subplots()
    for j, label in enumerate(label_list):
        for i, t in enumerate(task_list):
            sel = (labels == label) & (tasks == t)
            if sel.any():
                ax.scatter(Y[sel, 0], Y[sel, 1], color=cmap(i % cmap.N), marker=MARKERS[j % len(MARKERS)], s=30,
                           alpha=0.8, edgecolors="black" if j == 0 else "none", linewidths=0.4)  # fmt: skip
    task_handles = [Line2D([], [], ls="", marker="o", color=cmap(i % cmap.N), label=f"task {t}")
                    for i, t in enumerate(task_list)]  # fmt: skip
    method_handles = [Line2D([], [], ls="", marker=MARKERS[j % len(MARKERS)], color="0.3", label=label)
                      for j, label in enumerate(label_list)]  # fmt: skip
    first = ax.legend(handles=task_handles, title="task", fontsize=7, title_fontsize=8, loc="upper left",
                      bbox_to_anchor=(1.01, 1.0))  # fmt: skip
    ax.add_artist(first)
    ax.legend(handles=method_handles, title="prompt", fontsize=7, title_fontsize=8, loc="lower left",
              bbox_to_anchor=(1.01, 0.0))  # fmt: skip
    name = projection or "projection"
    ax.set_xlabel(f"{name} 1")
    ax.set_ylabel(f"{name} 2")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
