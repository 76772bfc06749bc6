"""TensorBoard figures of Prompt Diffuser: the reverse denoising chain of a generated prompt.

`DenoisingChainCallback` samples one test task's prompt from noise every `every_n_val_epochs`
validation epochs (never in the sanity check) and logs, as the image `figures/denoising_chain`,
one panel per prompt step: each state dimension (normalised units) against the denoising step,
from pure noise (left) to the generated prompt (right), with the expert few-shot prompt's value
of the same dimension marked at the right edge. The module must provide
`denoising_chain(datamodule, task, seed) -> (chain_states (n+1, L, obs_dim), expert_states (L, obs_dim))`.
"""

from __future__ import annotations

import lightning as L
import numpy as np


def denoising_figure(chain_states: np.ndarray, expert_states: np.ndarray | None = None, dims: int = 8,
                     title: str = ""):  # fmt: skip
    """A matplotlib Figure: chain_states (n+1, L, obs_dim), expert_states (L, obs_dim) or None."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    steps, L_, obs_dim = chain_states.shape
    shown = list(range(min(dims, obs_dim)))
    colors = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, L_, figsize=(3.0 * L_, 3.0), sharey=True, squeeze=False)
    x = np.arange(steps)
    for l, ax in enumerate(axes[0]):
        for k, d in enumerate(shown):
            ax.plot(x, chain_states[:, l, d], color=colors(k % 10), lw=1.2, label=f"s[{d}]")
            if expert_states is not None:
                ax.scatter([steps - 1 + 0.4], [expert_states[l, d]], color=colors(k % 10), marker="x", s=25)
        ax.set_title(f"prompt step {l + 1}")
        ax.set_xlabel("denoising step (0 = noise)")
    axes[0][0].set_ylabel("state (normalised)")
    axes[0][-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        fig.suptitle(title + "   (x: expert prompt)")
    fig.tight_layout()
    return fig


class DenoisingChainCallback(L.Callback):
    def __init__(self, every_n_val_epochs: int = 1, task_index: int = 0, seed: int = 0, dims: int = 8):
        """
        Args:
            every_n_val_epochs: log after every n-th validation epoch.
            task_index: which task (index into the data module's tasks) is drawn.
            seed: prompt seed (which few-shot tail gives the condition) and sampler seed.
            dims: how many state dimensions to draw (the first ones).
        """
        super().__init__()
        self.every, self.task_index, self.seed, self.dims = every_n_val_epochs, task_index, seed, dims
        self._val_epochs = 0
        self.last_figure = None

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        self._val_epochs += 1
        if self._val_epochs % self.every:
            return
        task = list(getattr(trainer.datamodule, "tasks", module.family.test_tasks))[self.task_index]
        chain, expert = module.denoising_chain(trainer.datamodule, task, self.seed)
        fig = denoising_figure(chain, expert, self.dims,
                               title=f"{module.family.name} task {task}, step {trainer.global_step}")  # fmt: skip
        self.last_figure = fig
        logger = trainer.logger
        if logger is not None and hasattr(logger.experiment, "add_figure"):
            logger.experiment.add_figure("figures/denoising_chain", fig, global_step=trainer.global_step, close=True)
        else:
            import matplotlib.pyplot as plt

            plt.close(fig)
