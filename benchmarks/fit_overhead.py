"""What the Lightning loop of `promptdiff fit` adds to a bare pre-training step.

    python benchmarks/fit_overhead.py [--family ant_dir] [--steps 20] [--batch-per-task 16 1] [--device cpu|cuda]

For each batch size, the same module, data stream and number of steps run twice in one process:

  bare:  a hand-written loop: next batch from the data module's loader, to the device,
         `model_step`, backward, clip at 0.25, AdamW, scheduler;
  fit:   `lightning.Trainer.fit` with the pre-training trainer's settings (conf/trainer/pretrain.yaml:
         gradient clipping, TensorBoard logging every 50 steps, the progress bar, our ModelCheckpoint;
         no validation or rollout falls inside the timed steps), `training_step` as `promptdiff fit` runs it.

Both are timed from the end of the first step (warm-up) to the end of the last, in the order
bare, fit, fit, bare (so a machine that slows down or speeds up during the run affects both
alike). Prints the mean seconds per step of each and the ratio fit / bare. The small batch makes the per-step overhead visible;
the reference batch (16 per task) is what pre-training runs.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from promptdiff.callbacks import ModelCheckpoint
from promptdiff.data.datamodule import PromptDTDataModule
from promptdiff.methods import PromptDTPretrain


class _StepClock(L.Callback):
    def __init__(self):
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())


def bare(family: str, per_task: int, steps: int, device: str) -> float:
    torch.manual_seed(0)
    dm = PromptDTDataModule(family, batch_size_per_task=per_task)
    dm.setup("fit")
    module = PromptDTPretrain(family).to(device).train()
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    loader = iter(dm.train_dataloader())
    ends = []
    for _ in range(steps + 1):
        batch = dm.transfer_batch_to_device(next(loader), torch.device(device), 0)
        loss = module.model_step(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 0.25)
        opt.step()
        sched.step()
        if device == "cuda":
            torch.cuda.synchronize()
        ends.append(time.perf_counter())
    return (ends[-1] - ends[0]) / steps


def fit(family: str, per_task: int, steps: int, device: str) -> float:
    torch.manual_seed(0)
    dm = PromptDTDataModule(family, batch_size_per_task=per_task)
    module = PromptDTPretrain(family)
    clock = _StepClock()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(max_steps=steps + 1, gradient_clip_val=0.25, val_check_interval=1000,
                            check_val_every_n_epoch=None, limit_val_batches=0, log_every_n_steps=50,
                            accelerator=device, devices=1, logger=TensorBoardLogger(tmp, name="fit_overhead"),
                            callbacks=[ModelCheckpoint(dirpath=tmp, every_n_train_steps=5000, save_last=True), clock],
                            enable_model_summary=False)  # fmt: skip
        trainer.fit(module, datamodule=dm)
    return (clock.ends[-1] - clock.ends[0]) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="ant_dir")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-per-task", type=int, nargs="+", default=[16, 1])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    rows = []
    for per_task in args.batch_per_task:
        b1 = bare(args.family, per_task, args.steps, args.device)
        f1 = fit(args.family, per_task, args.steps, args.device)
        f2 = fit(args.family, per_task, args.steps, args.device)
        b2 = bare(args.family, per_task, args.steps, args.device)
        rows.append((per_task, (b1 + b2) / 2, (f1 + f2) / 2))
    name = (torch.cuda.get_device_name() if args.device == "cuda"
            else f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads")  # fmt: skip
    print(f"machine: {name}; torch {torch.__version__}; {args.family}, {args.steps} timed steps after one warm-up")
    for per_task, b, f in rows:
        print(f"batch {per_task} per task: bare {b * 1000:.1f} ms/step ({1 / b:.2f} steps/s), promptdiff fit loop "
              f"{f * 1000:.1f} ms/step ({1 / f:.2f} steps/s): fit / bare = {f / b:.2f}")


if __name__ == "__main__":
    main()
