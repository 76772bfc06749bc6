"""A rollout of one test task, rendered offscreen by MuJoCo, as a short TensorBoard video.

`RolloutVideoCallback` plays one episode of one test task with the module's own prompt (the
`primary_set` of `rollout_prompt_sets`: the generated prompt for Prompt Diffuser; the expert prompt
for pre-training), renders it (`promptdiff.rollout.render_episode`) and logs it as the animated
image `video/rollout_task<k>` at the end of `fit` (and, if asked, every n validation epochs; the
end of fit adds none when the last validation already recorded the same step). The
same GIF is written to `<log_dir>/videos/rollout_task<k>_step<s>.gif`.

Rendering needs an OpenGL platform for MuJoCo: run with `MUJOCO_GL=egl` (a GPU, or Mesa's EGL on a
CPU) or `MUJOCO_GL=osmesa` (CPU, needs libOSMesa). Where none works, or the family has nothing to
render (point_robot), the callback warns ONCE, naming the cause, and never tries again in that run;
training goes on.

The video is an animated GIF inside TensorBoard's image summary, which is also what
`SummaryWriter.add_video` writes; it is encoded here with Pillow (already installed with matplotlib)
instead of `add_video`, which needs moviepy 1.x (its `moviepy.editor` module is gone in 2.x) and
imageio-ffmpeg's bundled ffmpeg for what is a few dozen GIF frames.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import lightning as L
import numpy as np

from promptdiff.callbacks import targets
from promptdiff.rollout import RenderingUnavailable, render_episode


def encode_gif(frames: np.ndarray, fps: int = 20) -> bytes:
    """Animated GIF of frames (T, H, W, 3) uint8, looping."""
    from PIL import Image

    images = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=max(1, round(1000 / fps)),
                   loop=0)  # fmt: skip
    return buf.getvalue()


def log_gif(experiment, tag: str, gif: bytes, shape: tuple[int, int], step: int) -> None:
    """Write an animated GIF as a TensorBoard image summary (what `add_video` does) to a SummaryWriter."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    image = Summary.Image(height=int(shape[0]), width=int(shape[1]), colorspace=3, encoded_image_string=gif)
    experiment._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


class RolloutVideoCallback(L.Callback):
    def __init__(self, task_index: int = 0, every_n_val_epochs: int = 0, at_fit_end: bool = True,
                 prompt_set: str | None = None, prompt_seed: int = 0, seed: int = 0, frame_every: int = 2,
                 fps: int = 20, width: int = 240, height: int = 180):  # fmt: skip
        """
        Args:
            task_index: which task (index into the module's evaluated tasks, `targets.rollout_tasks`) is played.
            every_n_val_epochs: also log after every n-th validation epoch (0: only at the end of fit).
            at_fit_end: log once when fit ends.
            prompt_set: which of the module's prompt sets prompts the episode (default: its primary set).
            prompt_seed: which few-shot tail (and sampler seed) gives the prompt, as in RolloutCallback.
            seed: episode seed (episode 0 of RolloutCallback's evaluation with the same seed).
            frame_every: keep every n-th step's frame (200 steps, 2: a 101-frame video).
            fps: frames per second of the video.
            width, height: frame size of the MuJoCo families (Meta-World: its own, at most `width`).
        """
        super().__init__()
        self.task_index, self.every, self.at_fit_end = task_index, every_n_val_epochs, at_fit_end
        self.prompt_set, self.prompt_seed, self.seed = prompt_set, prompt_seed, seed
        self.frame_every, self.fps, self.width, self.height = frame_every, fps, width, height
        self._val_epochs = 0
        self.unavailable: str | None = None  # why rendering failed (then no further attempt)
        self.last: dict | None = None  # the last episode: frames, return, length, task, tag, gif path
        self._recorded_step: int | None = None

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.every:
            return
        self._val_epochs += 1
        if self._val_epochs % self.every == 0:
            self._record(trainer, module)

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.at_fit_end and self._recorded_step != trainer.global_step:  # not twice for the same weights
            self._record(trainer, module)

    def _prompt(self, trainer: L.Trainer, module: L.LightningModule, task: int):
        name = self.prompt_set or module.primary_set
        return name, targets.prompt_sets(module, trainer.datamodule, [task], self.prompt_seed, only=name)[name][task]

    def _record(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero or self.unavailable is not None:
            return
        task = targets.rollout_tasks(module)[self.task_index]
        was_training = module.training
        try:
            name, prompt = self._prompt(trainer, module, task)
            policy = targets.policy(module, task)
            episode = render_episode(policy, module.family, task, prompt, seed=self.seed,
                                     frame_every=self.frame_every, width=self.width, height=self.height,
                                     max_side=max(self.width, self.height))  # fmt: skip
        except RenderingUnavailable as err:
            self.unavailable = str(err)
            warnings.warn(f"RolloutVideoCallback: no rollout video in this run: {err}. Set MUJOCO_GL=egl (GPU, "
                          f"or Mesa's EGL on a CPU) or MUJOCO_GL=osmesa before the run to record one.",
                          stacklevel=2)  # fmt: skip
            return
        finally:
            module.train(was_training)
        frames = episode["frames"]
        gif = encode_gif(frames, self.fps)
        tag = f"video/rollout_task{task}"
        experiment = getattr(trainer.logger, "experiment", None) if trainer.logger is not None else None
        if experiment is not None and hasattr(experiment, "_get_file_writer"):
            log_gif(experiment, tag, gif, frames.shape[1:3], trainer.global_step)
        path = None
        log_dir = getattr(trainer.logger, "log_dir", None)  # the logger's own: Trainer.log_dir is a collective
        if log_dir:
            path = Path(log_dir) / "videos" / f"rollout_task{task}_step{trainer.global_step}.gif"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(gif)
        self.last = dict(episode, tag=tag, prompt_set=name, gif=None if path is None else str(path))
        self._recorded_step = trainer.global_step
