"""Ship a stage-1 diffuser: `promptdiff data ship-stage1 CKPT --family F`.

A stage-1 run (`promptdiff fit --config conf/diffuser_pretrain/<family>.yaml`) leaves full Lightning
checkpoints (optimiser state, every callback's state). What the few-shot and zero-shot stages read
(`PromptDiffuser(init_diffuser=...)`) is the diffuser's weights and the run's hyper-parameters, so the
shipped `datasets/<family>/diffuser_stage1.ckpt` keeps only those (and the step), and
`diffuser_stage1.json` records where it came from: the checkpoint, the step, the losses the run logged
at every validation (read from its TensorBoard events, when the run had a logger) and whatever the caller
adds (command, wall time, machine, why this step).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

PREFIX = "diffusers.0."


def logged_losses(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of the train/ and val/ scalars in the TensorBoard events under `run_dir`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(Path(run_dir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            if tag.startswith(("train/", "val/")):
                out.setdefault(tag, []).extend((int(e.step), float(e.value)) for e in acc.Scalars(tag))
    return {tag: sorted(set(values)) for tag, values in out.items()}


def ship_stage1(ckpt: str | Path, family: str, root: str | Path = "datasets", run_dir: str | Path | None = None,
                record: dict | None = None) -> tuple[Path, Path]:  # fmt: skip
    """Write `<root>/<family>/diffuser_stage1.ckpt` (the diffuser weights and hyper-parameters of `ckpt`) and its
    `diffuser_stage1.json`; returns both paths. Refuses a checkpoint of another family or without a diffuser."""
    import torch

    from promptdiff.safe_io import load_checkpoint

    ckpt = Path(ckpt)
    full = load_checkpoint(ckpt, what="stage-1 checkpoint")
    hp = dict(full.get("hyper_parameters") or {})
    if hp.get("family") != family:
        raise ValueError(f"{ckpt} is a run of family {hp.get('family')!r}, not {family!r}")
    if hp.get("split") != "train":
        raise ValueError(f"{ckpt} was trained on split {hp.get('split')!r}: a stage-1 diffuser trains on split 'train'")
    weights = {k: v for k, v in full.get("state_dict", {}).items() if k.startswith(PREFIX)}
    if not weights:
        raise ValueError(f"{ckpt} holds no diffuser weights ({PREFIX}*)")
    slim = {"global_step": full.get("global_step"), "epoch": full.get("epoch"),
            "pytorch-lightning_version": full.get("pytorch-lightning_version"), "hyper_parameters": hp,
            "state_dict": weights}  # fmt: skip
    out = Path(root) / family / "diffuser_stage1.ckpt"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(slim, tmp)
    os.replace(tmp, out)
    from promptdiff.envs import get_family

    fam = get_family(family)
    shared = sorted(set(fam.train_tasks) & set(fam.test_tasks))
    tasks = (f"its {len(fam.train_tasks)} training tasks, which are also its test tasks {shared} (the family has no "
             "others)" if shared else f"its {len(fam.train_tasks)} training tasks (never its test tasks)")  # fmt: skip
    info = {"family": family, "checkpoint": out.name, "source_checkpoint": ckpt.name, "step": full.get("global_step"),
            "purpose": f"stage-1 Prompt Diffuser: one diffuser pre-trained on the full data of {tasks}; initialises "
                       "the few-shot and zero-shot Prompt Diffuser (--model.init_args.init_diffuser)",
            **(record or {})}  # fmt: skip
    if run_dir is not None:
        logged = logged_losses(run_dir)  # every validation; the training losses thinned to about every 200 steps
        info["logged"] = {tag: [[s, v] for s, v in (values if tag.startswith("val/") else values[::8])]
                          for tag, values in logged.items() if tag.startswith("val/") or tag in ("train/L_DM", "train/L_P")}
    record_path = out.with_suffix(".json")
    tmp = record_path.with_name(record_path.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=1) + "\n")
    os.replace(tmp, record_path)
    return out, record_path
