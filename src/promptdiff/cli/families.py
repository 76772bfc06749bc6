"""`promptdiff families`: every registered task family, its tasks and sizes, and what is on disk.

For each family: the number of tasks and of training / validation / test tasks, observation and
action sizes, the horizon, and whether the files its runs read are present under the dataset root
(expert data, the learned expert, the PLM, the stage-1 diffuser), with the command that makes
each missing one.
"""

from __future__ import annotations

from pathlib import Path

from promptdiff.envs import all_families, get_family
from promptdiff.envs.families import TaskFamily


def _files(fam: TaskFamily, root: Path) -> list[tuple[str, bool, str]]:
    """(what, present, command that makes it) for the files a family's runs read."""
    data = root / fam.dataset_family
    rows = [("data", (data / "train-expert.h5").is_file() and (data / "prompt-expert.h5").is_file(),
             fam.collect_command(root=root))]  # fmt: skip
    collector = get_family(fam.dataset_family)  # the family whose expert writes the data
    if collector.expert == "learned":
        rows.append(("expert", (root / collector.expert_name / "expert_policy.pt").is_file(),
                     f"promptdiff expert train --config conf/expert/{collector.expert_name}.yaml"))  # fmt: skip
    rows.append(("plm", (root / fam.plm_name / "plm.ckpt").is_file(),
                 f"promptdiff fit --config conf/pretrain/{fam.plm_name}.yaml, then copy its last.ckpt to "
                 f"{root / fam.plm_name / 'plm.ckpt'}"))  # fmt: skip
    rows.append(("stage-1 diffuser", (root / fam.name / "diffuser_stage1.ckpt").is_file(),
                 f"promptdiff fit --config conf/diffuser_pretrain/{fam.name}.yaml, then promptdiff data ship-stage1 "
                 f"<its last.ckpt> --family {fam.name} --root {root}"))  # fmt: skip
    return rows


def families_report(root: str | Path = "datasets") -> str:
    """The table printed by `promptdiff families`, then the commands that make what is missing."""
    root = Path(root)
    header = ["family", "tasks", "train/val/test", "obs", "act", "horizon", "expert", "present", "missing"]
    lines, todo = [], []
    for name, fam in sorted(all_families().items()):
        files = _files(fam, root)
        present = ", ".join(what for what, ok, _ in files if ok) or "-"
        missing = ", ".join(what for what, ok, _ in files if not ok) or "-"
        splits = f"{len(fam.train_tasks)}/{len(fam.val_tasks)}/{len(fam.test_tasks)}"
        lines.append([name, str(fam.num_tasks), splits, str(fam.obs_dim), str(fam.act_dim), str(fam.horizon),
                      fam.expert, present, missing])  # fmt: skip
        todo += [f"  {name} {what}: {cmd}" for what, ok, cmd in files if not ok]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    fmt = lambda row: "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()  # noqa: E731
    out = [fmt(header), fmt(["-" * w for w in widths]), *map(fmt, lines)]
    out.append(f"\n(files under {root}/; validation tasks are taken from the training tasks)")
    if todo:
        out += ["", "to make what is missing:", *todo]
    return "\n".join(out)
