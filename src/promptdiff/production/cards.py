"""Writing dataset cards: `<root>/<family>/card.json` (read by code) and `README.md` (read by people).

The card records how the data were made and, per task, the expert's and a uniform random
policy's mean return, which define the normalised score (`promptdiff.data.cards.ScoreCard`).
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict
from pathlib import Path

import numpy as np

from promptdiff.data.hdf5_format import dataset_path, open_trajectories
from promptdiff.envs import get_family

RANDOM_EPISODES = 5
RANDOM_SEED = 777

def random_returns(family, root: str | Path, workers: int = 0, tasks=None) -> dict[int, tuple[float, float]]:
    """Per-task (mean, std) return of uniform random actions, from the random file or rollouts (of `tasks`,
    default every task of the family)."""
    fam = get_family(family)
    path = dataset_path(fam.name, "train", "random", root)
    if path.exists():
        with open_trajectories(path, family=fam.name) as f:
            return {t: (s["return_mean"], s["return_std"]) for t, s in f.task_stats.items()}
    from promptdiff.production.collect import run_episodes
    from promptdiff.production.experts import RandomPolicy

    chosen = range(fam.num_tasks) if tasks is None else sorted(int(t) for t in tasks)
    tasks = [t for t in chosen for _ in range(RANDOM_EPISODES)]
    seeds = [RANDOM_SEED * 1000 + t * 10 + e for t in chosen for e in range(RANDOM_EPISODES)]
    returns: dict[int, list[float]] = {}
    for trajs in run_episodes(fam, tasks, seeds, RandomPolicy(), [RANDOM_SEED], workers=workers):
        for traj in trajs:
            returns.setdefault(traj.task_id, []).append(traj.episode_return)
    return {t: (float(np.mean(r)), float(np.std(r))) for t, r in sorted(returns.items())}


def _file_stats(family, role, quality, root):
    path = dataset_path(family, role, quality, root)
    if not path.exists():
        return None
    with open_trajectories(path, family=family) as f:
        return {"expert": f.attrs["expert"], "episodes": f.num_episodes, "tasks": f.task_stats}


def write_card(cfg, wall_time: float | None = None) -> Path:
    from promptdiff.production.collect import cpu_count

    fam = get_family(cfg.family)
    root = Path(cfg.root)
    files = {f"{role}-{q}": _file_stats(fam.name, role, q, root)
             for q in ("expert", "medium", "random") for role in ("train", "prompt")}  # fmt: skip
    files = {k: v for k, v in files.items() if v is not None}
    rand = random_returns(fam, root, cfg.workers, tasks=cfg.tasks)
    expert = files["train-expert"]["tasks"]
    prompt = files.get("prompt-expert", {"tasks": {}})["tasks"]
    card_path = root / fam.name / "card.json"
    old = json.loads(card_path.read_text()) if card_path.exists() else {}
    card = {
        "family": fam.name,
        "description": fam.description,
        "command": fam.collect_command(),
        "collection_config": asdict(cfg),
        "collection_wall_time_s": round(wall_time, 1) if wall_time else old.get("collection_wall_time_s"),
        "collection_machine": f"{platform.machine()}, {cpu_count()} CPU cores",
        "expert": files["train-expert"]["expert"],
        "expert_training": _expert_training(root / fam.name),
        "quality_bar": str(fam.quality_bar),
        "files": {k: {"expert": v["expert"], "episodes": v["episodes"]} for k, v in files.items()},
        "tasks": {},
    }
    for t in sorted(expert):
        card["tasks"][str(t)] = {
            "split": fam.split_of(t),
            "param": [float(x) for x in np.atleast_1d(fam.task_params[t])],
            "expert_return": expert[t]["return_mean"],
            "expert_return_std": expert[t]["return_std"],
            "prompt_return": prompt.get(t, {}).get("return_mean"),
            "random_return": rand[t][0],
            "random_return_std": rand[t][1],
            "expert_success": None if np.isnan(expert[t]["success_rate"]) else expert[t]["success_rate"],
            "prompt_success": (None if t not in prompt or np.isnan(prompt[t]["success_rate"])
                               else prompt[t]["success_rate"]),  # fmt: skip
        }
        for q in ("medium", "random"):
            if f"train-{q}" in files:
                card["tasks"][str(t)][f"{q}_data_return"] = files[f"train-{q}"]["tasks"][t]["return_mean"]
    tasks = card["tasks"].values()
    train_ret = {int(k): v["expert_return"] for k, v in card["tasks"].items()}
    prompt_ret = {int(k): v["prompt_return"] for k, v in card["tasks"].items()}
    train_succ = {int(k): v["expert_success"] for k, v in card["tasks"].items()}
    prompt_succ = {int(k): v["prompt_success"] for k, v in card["tasks"].items()}
    card["summary"] = {
        "expert_return_mean": float(np.mean([v["expert_return"] for v in tasks])),
        "expert_return_min": float(np.min([v["expert_return"] for v in tasks])),
        "prompt_return_mean": float(np.mean([v["prompt_return"] for v in tasks])),
        "prompt_return_min": float(np.min([v["prompt_return"] for v in tasks])),
        "random_return_mean": float(np.mean([v["random_return"] for v in tasks])),
        "train_meets_bar": fam.quality_bar.met(train_ret, train_succ),
        "prompt_meets_bar": fam.quality_bar.met(prompt_ret, prompt_succ),
    }
    if fam.has_success:
        card["summary"]["expert_success_mean"] = float(np.mean([v["expert_success"] for v in tasks]))
        card["summary"]["prompt_success_mean"] = float(np.mean([v["prompt_success"] for v in tasks]))
    card_path.parent.mkdir(parents=True, exist_ok=True)
    card_path.write_text(json.dumps(card, indent=1) + "\n")
    (root / fam.name / "README.md").write_text(render_card(card, _plm_record(root / fam.name)))
    return card_path


def differs_from_card(family, root: str | Path = "datasets", rtol: float = 1e-6) -> str | None:
    """Compare the per-task mean returns of the family's expert files under root with its card: None when they
    agree (or there is no card), else one line naming the largest difference.

    Files that differ were made by another version of the collection code than the card's data (the shipped
    MuJoCo cards predate the row-by-row float64 expert, so regenerated locomotion data differ from them in
    the last bits, which the simulator amplifies) or where the floating point differs: the same distribution,
    another draw, so results made from them match results made from the card's data in distribution only."""
    from promptdiff.data.cards import card_path

    fam = get_family(family)
    card_file = card_path(fam, root)
    if not card_file.exists():
        return None
    tasks = json.loads(card_file.read_text())["tasks"]
    worst = None  # (relative difference, role, task, collected, card)
    for role, key in (("train", "expert_return"), ("prompt", "prompt_return")):
        stats = _file_stats(fam.name, role, "expert", root)
        for t, st in (stats or {"tasks": {}})["tasks"].items():
            ref = tasks.get(str(t), {}).get(key)
            if ref is None:
                continue
            rel = abs(st["return_mean"] - ref) / max(abs(ref), 1.0)
            if rel > rtol and (worst is None or rel > worst[0]):
                worst = (rel, role, t, st["return_mean"], ref)
    if worst is None:
        return None
    _, role, t, got, ref = worst
    return (f"{card_file.parent}: the collected data differ from the ones the dataset card describes ({card_file}); "
            f"largest: task {t} of {role}-expert.h5, mean return {got:.1f} here vs {ref:.1f} on the card. Made by "
            f"another collection code or floating point than the card's data (locomotion amplifies last-bit "
            f"differences), they are another draw of the same distribution: results made from them are comparable "
            f"with results made from the card's data in distribution, not run for run")


def rerender_card(family: str, root: str | Path = "datasets") -> Path:
    """Rewrite README.md from card.json (and plm.json, the shipped PLM's scores, if present)."""
    folder = Path(root) / family
    (folder / "README.md").write_text(render_card(json.loads((folder / "card.json").read_text()), _plm_record(folder)))
    return folder / "README.md"


def _plm_record(folder: Path) -> dict | None:
    path = folder / "plm.json"
    return json.loads(path.read_text()) if path.exists() else None


def _expert_training(folder: Path) -> dict | None:
    path = folder / "expert_training.json"
    if not path.exists():
        return None
    info = json.loads(path.read_text())
    return {k: info[k] for k in ("command", "summary", "steps", "wall_time_s", "medium") if k in info}


def render_card(card: dict, plm: dict | None = None) -> str:
    s = card["summary"]
    lines = [
        f"# Dataset card: {card['family']}",
        "",
        f"{card['description'].capitalize()}.",
        "",
        "## How it was made",
        "",
        f"- Expert: `{card['expert']}`.",
    ]
    if card.get("expert_training"):
        et = card["expert_training"]
        lines.append(f"- Expert training: {et.get('summary', '')} Command: `{et.get('command', '')}`.")
    cfg = card["collection_config"]
    lines += [
        f"- Regenerate the HDF5 files (git-ignored, cached here) with `{card['command']}`"
        f" ({cfg['episodes_per_task']} training episodes and a pool of {cfg['prompt_episodes']}"
        f" prompt episodes per task; seeds {cfg['seed']} and {cfg['prompt_seed']}).",
        f"- Collection wall time: {card['collection_wall_time_s']} s on {card['collection_machine']}.",
        "- Files: " + ", ".join(f"`{k}.h5` ({v['episodes']} episodes)" for k, v in card["files"].items()) + ".",
        "",
        "## Quality",
        "",
        f"Bar: {card['quality_bar']}. Training set: {'met' if s['train_meets_bar'] else 'NOT met'};"
        f" prompt pool: {'met' if s['prompt_meets_bar'] else 'NOT met'}.",
        "",
        f"Mean expert return over all tasks: {s['expert_return_mean']:.1f} (training set, worst task"
        f" {s['expert_return_min']:.1f}); {s['prompt_return_mean']:.1f} (prompt pool, worst task"
        f" {s['prompt_return_min']:.1f}); uniform random policy {s['random_return_mean']:.1f}.",
    ]
    if "expert_success_mean" in s:
        lines.append(f"Success rate: {s['expert_success_mean']:.3f} (training set), {s['prompt_success_mean']:.3f} (prompt pool).")
    lines += [
        "",
        "The normalised score used in every evaluation is (return - random) / (expert - random),",
        "with the per-task means below (expert = training-set mean).",
        "",
    ]
    has_succ = "expert_success_mean" in s
    extra = [q for q in ("medium", "random") if f"{q}_data_return" in next(iter(card["tasks"].values()))]
    head = ["task", "split", "param", "expert return", "prompt return", "random return"]
    head += [f"{q} data return" for q in extra] + (["success (train / prompt)"] if has_succ else [])
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t, v in card["tasks"].items():
        row = [t, v["split"], ", ".join(f"{x:.3f}" for x in v["param"]),
               f"{v['expert_return']:.1f} +- {v['expert_return_std']:.1f}", f"{v['prompt_return']:.1f}",
               f"{v['random_return']:.1f}"]  # fmt: skip
        row += [f"{v[f'{q}_data_return']:.1f}" for q in extra]
        if has_succ:
            row.append(f"{v['expert_success']:.2f} / {v['prompt_success']:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    if plm:
        tr = plm["training"]
        lines += [
            "",
            "## Pre-trained policy (PLM)",
            "",
            f"`{plm['checkpoint']}`: Prompt-DT pre-trained on the training tasks, {tr['steps']} steps,"
            f" {tr['wall_time_min']} min on {tr['machine']}. Command: `{tr['command']}`. {tr.get('note', '')}",
            "",
            f"On the test tasks, {plm['episodes_per_task']} episodes per task and prompt seeds"
            f" {plm['prompt_seeds']}: mean normalised score {plm['expert_prompt_score']:.3f} prompted with an"
            f" expert prompt of the task itself, {plm['other_task_prompt_score']:.3f} prompted with the"
            " prompt of another task (the task half-way around the task list).",
        ]
    return "\n".join(lines) + "\n"
