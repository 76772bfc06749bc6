"""Pre-training throughput of the Prompt-DT at the reference batch (16 pairs x every training task).

    python benchmarks/pretrain_throughput.py [--family ant_dir] [--steps 5] [--device cpu|cuda] [--precision 32|bf16]

Uses the family's real data (generated from the shipped expert if missing) and the reference
model size; prints seconds per optimisation step (forward, backward, clip, AdamW) and steps/s,
after one warm-up step. Data sampling time is reported separately.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from promptdiff.data.datamodule import PromptDTDataModule
from promptdiff.methods import PromptDTPretrain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="ant_dir")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default="32", choices=["32", "bf16"])
    args = ap.parse_args()

    dm = PromptDTDataModule(args.family)
    dm.setup()
    module = PromptDTPretrain(args.family).to(args.device)
    opt = module.configure_optimizers()["optimizer"]
    tasks = dm.train_tasks
    rng = np.random.default_rng(0)

    t0 = time.perf_counter()
    batches = [dm.sampler.sample_all(tasks, 16, rng) for _ in range(args.steps + 1)]
    sample_s = (time.perf_counter() - t0) / len(batches)
    batches = [dm.transfer_batch_to_device({"prompt": p, "segment": s, "task_ids": i}, args.device, 0)
               for p, s, i in batches]  # fmt: skip

    def step(batch):
        with torch.autocast(device_type=torch.device(args.device).type, dtype=torch.bfloat16,
                            enabled=args.precision == "bf16"):  # fmt: skip
            loss = module.model_step(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 0.25)
        opt.step()

    module.train()
    step(batches[0])
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for b in batches[1:]:
        step(b)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / args.steps
    pairs = 16 * len(tasks)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} torch threads"
    print(f"machine: {name}")
    print(f"{args.family}: batch {pairs} (prompt, segment) pairs = 16 x {len(tasks)} training tasks, "
          f"{3 * (dm.hparams.prompt_length + dm.hparams.context_length)} tokens each, precision {args.precision}")
    print(f"sampling a batch: {sample_s * 1000:.2f} ms")
    print(f"optimisation step: {dt:.3f} s -> {1 / dt:.2f} steps/s; 50 000 steps would take {50_000 * dt / 3600:.1f} h")


if __name__ == "__main__":
    main()
