"""TensorBoard figures of prompt tuning: the reverse denoising chain and the map of prompts.

`DenoisingChainCallback` samples one test task's prompt from noise every `every_n_val_epochs`
validation epochs (never in the sanity check) and logs, as the image `figures/denoising_chain`,
one panel per prompt step: each state dimension (normalised units) against the denoising step,
from pure noise (left) to the generated prompt (right), with the expert few-shot prompt's value
of the same dimension marked at the right edge. The module must provide
`denoising_chain(datamodule, task, seed) -> (chain_states (n+1, L, obs_dim), expert_states (L, obs_dim))`.

`PromptSpaceCallback` logs, once at the end of `fit`, the image `figures/prompt_space`: every
prompt set of the module (`rollout_prompt_sets`: for Prompt Diffuser the generated and the expert
prompts) for every test task and `prompts_per_task` prompt seeds, projected to 2-D
(`promptdiff.viz.space`: t-SNE from 20 points on, PCA below), coloured by task and marked by set.
With the defaults (8 seeds) the families give 32 (cheetah_dir, 2 test tasks) to 80 points, so t-SNE.

The drawing itself lives in `promptdiff.viz`; these callbacks only schedule it and log it.
"""

from __future__ import annotations

import lightning as L

from promptdiff.callbacks import targets
from promptdiff.viz import denoising_figure, project_2d, prompt_points, prompt_space_figure

__all__ = ["DenoisingChainCallback", "PromptSpaceCallback", "denoising_figure"]


def _log_figure(trainer: L.Trainer, tag: str, fig) -> bool:
    """Add `fig` to the trainer's TensorBoard logger; False when there is none."""
    logger = trainer.logger
    experiment = getattr(logger, "experiment", None) if logger is not None else None
    if experiment is None or not hasattr(experiment, "add_figure"):
        return False
    experiment.add_figure(tag, fig, global_step=trainer.global_step, close=False)
    return True


class DenoisingChainCallback(L.Callback):
    def __init__(self, every_n_val_epochs: int = 1, task_index: int = 0, seed: int = 0, dims: int = 8):
        """
        Args:
            every_n_val_epochs: log after every n-th validation epoch.
            task_index: which task (index into the module's evaluated tasks, `targets.rollout_tasks`) is drawn.
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
        task = targets.rollout_tasks(module)[self.task_index]
        chain, expert = module.denoising_chain(trainer.datamodule, task, self.seed)
        fig = denoising_figure(chain, expert, self.dims,
                               title=f"{module.family.name} task {task}, step {trainer.global_step}")  # fmt: skip
        self.last_figure = fig
        _log_figure(trainer, "figures/denoising_chain", fig)


class PromptSpaceCallback(L.Callback):
    def __init__(self, prompts_per_task: int = 8, seed: int = 0, space: str = "auto", projection: str = "auto",
                 min_tsne_points: int = 20):  # fmt: skip
        """
        Args:
            prompts_per_task: prompt seeds per task and set (seeds seed, seed + 1, ...): each gives a new
                sampler noise for generated prompts and a few-shot tail for expert prompts.
            seed: first prompt seed; also the seed of t-SNE.
            space: "trajectory" (states and actions), "tokens" (the PLM's prompt embedding; needed for soft
                prompts) or "auto" (trajectory unless a set holds embedded prompts).
            projection: "tsne", "pca" or "auto" (t-SNE from `min_tsne_points` points on, else PCA).
            min_tsne_points: see `projection`.
        """
        super().__init__()
        if prompts_per_task < 1:
            raise ValueError(f"prompts_per_task must be >= 1, got {prompts_per_task}")
        self.n, self.seed, self.space, self.projection = prompts_per_task, seed, space, projection
        self.min_tsne_points = min_tsne_points
        self.last_figure = None
        self.last_projection: str | None = None

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not targets.is_prompt_tuning(module):
            return
        tasks = targets.rollout_tasks(module)
        triples = []
        for s in range(self.seed, self.seed + self.n):
            for name, prompts in targets.prompt_sets(module, trainer.datamodule, tasks, s).items():
                triples += [(name, t, prompts[t]) for t in tasks]
        X, task_ids, labels, space = prompt_points(triples, plm=getattr(module, "plm", None), space=self.space)
        Y, used = project_2d(X, self.projection, seed=self.seed, min_tsne_points=self.min_tsne_points)
        self.last_projection = used
        title = (f"{module.family.name}: prompts of tasks {tasks}, {self.n} prompt seeds\n"
                 f"({used} of the prompts' {space} vectors, step {trainer.global_step})")  # fmt: skip
        fig = prompt_space_figure(Y, task_ids, labels, title=title, projection=used)
        self.last_figure = fig
        _log_figure(trainer, "figures/prompt_space", fig)
