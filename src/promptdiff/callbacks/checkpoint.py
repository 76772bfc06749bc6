"""Lightning's ModelCheckpoint, with `last.ckpt` always holding the final step of training, also when a
cluster's scheduler stops the run with SIGTERM (preemption)."""

from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException


class ModelCheckpoint(L.pytorch.callbacks.ModelCheckpoint):
    """Lightning's ModelCheckpoint; with `save_last`, `last.ckpt` is also written when training ends.

    Lightning writes `last.ckpt` only alongside a periodic save (`every_n_train_steps`), so a run
    stopped by `max_steps` between two saves, or by `max_time`, left the last steps out of
    `last.ckpt`: a pre-training shortened to 6 500 steps with saves every 5 000 kept step 5 000.
    Here `last.ckpt` is rewritten at the end of `fit` whenever the final step is not in it yet,
    so copying `last.ckpt` always ships the weights the run ended with.

    On SIGTERM Lightning finishes the current step and stops (`SIGTERMException`); `last.ckpt` is then
    written with that step, so `--ckpt_path <dir>/last.ckpt` continues where the run was stopped. The
    path is kept in `ModelCheckpoint.saved_on_sigterm` for the command line's message.
    """

    saved_on_sigterm: str | None = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if not self.save_last or self.dirpath is None or trainer.fast_dev_run:
            return
        if self._last_global_step_saved == trainer.global_step and self._last_checkpoint_saved:
            return  # the final step is already in last.ckpt
        path = Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"
        self.last_model_path = str(path)  # saved with the checkpoint: a resumed run rewrites last.ckpt, not last-v1
        trainer.save_checkpoint(str(path))  # every rank calls it; rank 0 writes
        self._last_checkpoint_saved = str(path)
        self._last_global_step_saved = trainer.global_step

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or not self.save_last or self.dirpath is None:
            return
        path = Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"
        if self._last_global_step_saved != trainer.global_step or not self._last_checkpoint_saved:
            self.last_model_path = str(path)
            trainer.save_checkpoint(str(path))
        type(self).saved_on_sigterm = str(path)
