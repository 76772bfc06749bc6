"""One pre-training step of promptdiff's PLM against the reference Prompt-DT, on identical batches.

    python benchmarks/plm_step_vs_reference.py [--family ant_dir] [--rounds 6] [--batch-per-task 16]
                                               [--device cpu|cuda] [--compile]

Both models start from the same weights (`reference_prompt_dt.ReferencePromptDT.copy_weights_from`)
and take the same step: forward in training mode (dropout 0.1), masked action MSE, backward,
gradient clipping at 0.25, AdamW. Ours is `PromptDTPretrain.model_step`, exactly what `promptdiff
fit` runs (with `--compile`, the module's compiled step). The rounds are interleaved (ours, then
the reference, on the same batch; the order alternates every round) after one warm-up step each,
so both see the same machine. Prints the median seconds per step of each and the ratio
reference / ours (> 1: ours is faster), and checks that the two losses agree on the first batch
with dropout off.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_prompt_dt import ReferencePromptDT, reference_loss  # noqa: E402

from promptdiff.data.datamodule import PromptDTDataModule  # noqa: E402
from promptdiff.methods import PromptDTPretrain  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="ant_dir")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--batch-per-task", type=int, default=16)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--compile", action="store_true", help="time our PLM compiled (PromptDTPretrain(compile=True))")
    args = ap.parse_args()

    torch.manual_seed(0)
    dm = PromptDTDataModule(args.family, batch_size_per_task=args.batch_per_task)
    dm.setup()
    ours = PromptDTPretrain(args.family, compile=args.compile).to(args.device)
    m = ours.model
    ref = ReferencePromptDT(m.obs_dim, m.act_dim).copy_weights_from(m).to(args.device)
    n_ours = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    n_ref = sum(p.numel() for p in ref.parameters() if p.requires_grad)

    rng = np.random.default_rng(0)
    batches = [dm.transfer_batch_to_device(dict(zip(("prompt", "segment", "task_ids"),
                                                    dm.sampler.sample_all(dm.train_tasks, args.batch_per_task, rng))),
                                           args.device, 0) for _ in range(args.rounds + 1)]  # fmt: skip

    with torch.no_grad():
        ours.eval(), ref.eval()
        loss_ours, loss_ref = float(ours.model_step(batches[0])), float(reference_loss(ref, batches[0]))

    def stepper(module, loss_fn):
        opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-4)

        def step(batch) -> float:
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            loss = loss_fn(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 0.25)
            opt.step()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            return time.perf_counter() - t0

        return step

    ours.train(), ref.train()
    step_ours, step_ref = stepper(ours, ours.model_step), stepper(ref, lambda b: reference_loss(ref, b))
    warm_ours, warm_ref = step_ours(batches[0]), step_ref(batches[0])
    times_ours, times_ref = [], []
    for r, batch in enumerate(batches[1:]):
        if r % 2 == 0:
            times_ours.append(step_ours(batch))
            times_ref.append(step_ref(batch))
        else:
            times_ref.append(step_ref(batch))
            times_ours.append(step_ours(batch))

    t_ours, t_ref = statistics.median(times_ours), statistics.median(times_ref)
    name = (torch.cuda.get_device_name() if args.device.startswith("cuda")
            else f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads")  # fmt: skip
    print(f"machine: {name}; torch {torch.__version__}")
    print(f"{args.family}: batch {batches[0]['segment']['states'].shape[0]} (prompt, segment) pairs, "
          f"{3 * (m.prompt_length + m.context_length)} tokens each; trainable parameters ours {n_ours:,}, "
          f"reference {n_ref:,}")  # fmt: skip
    print(f"losses with dropout off, first batch: ours {loss_ours:.7f}, reference {loss_ref:.7f} "
          f"(relative difference {abs(loss_ours - loss_ref) / abs(loss_ref):.1e})")
    print(f"first (warm-up) step: ours {warm_ours:.3f} s{' incl. compilation' if args.compile else ''}, "
          f"reference {warm_ref:.3f} s")
    print(f"ours      ({'compiled' if args.compile else 'eager'}): " + " ".join(f"{t:.3f}" for t in times_ours)
          + f" -> median {t_ours:.3f} s/step")
    print("reference (GPT-2, transformers): " + " ".join(f"{t:.3f}" for t in times_ref) + f" -> median {t_ref:.3f} s/step")
    print(f"speed ours / reference: {t_ref / t_ours:.2f}x")


if __name__ == "__main__":
    main()
