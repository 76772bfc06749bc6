"""Roll the policy out on the family's test tasks during training and in `promptdiff test`.

(A prompt-tuning method is evaluated on the tasks it tunes, `module.rollout_tasks`: the test tasks,
or held-out training tasks when hyper-parameters are being chosen with `split: val`.)

Every `every_n_val_epochs` validation epochs (never during the sanity check) the callback asks
the LightningModule for a `DTPolicy` (`rollout_policy()`) and for the prompts to compare, runs
the batched evaluator and logs the results.

* A module with `rollout_prompt_sets(datamodule, tasks, seed)` (prompt-tuning methods) returns
  named prompt sets, e.g. {"generated": ..., "expert": ...}; each set is evaluated with the same
  episodes and logged side by side as

      rollout/return_task<k>/<set>, rollout/return_mean/<set>, rollout/score_mean/<set>, rollout/success_mean/<set>

* Otherwise (pre-training) the DataModule's `expert_prompts(tasks, seed)` are evaluated and logged as

      rollout/return_task<k>, rollout/return_mean, rollout/score_mean (normalised), rollout/success_mean

With `final_table` the callback also evaluates once at the end of `fit`, prints per test task
the return of every prompt set side by side, and writes `<log_dir>/rollout_final.json` (or the
file `final_json` names, also without a logger). The summary names the method's own set
(`primary`) and its number of tuned parameters; `primary_only` evaluates that set alone (the
benchmark runs the expert prompt as its own method).

Methods whose network differs per task (`policy_per_task`) are evaluated task by task with
`rollout_policy(task)`; episode seeds depend on (seed, task, episode) only, so the numbers are
the same as one batched evaluation would give.

Under DDP the episodes are split across ranks (rank r plays episodes r, r + world, ...) and the
per-task sums are reduced, so every rank logs the same numbers and a ModelCheckpoint can
monitor them. In `promptdiff test` the same evaluation runs once and the summary is also
written as JSON to `<log_dir>/rollout_test.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import torch

from promptdiff.rollout import evaluate


class RolloutCallback(L.Callback):
    def __init__(self, every_n_val_epochs: int = 1, episodes: int = 20, seed: int = 0, prompt_seed: int = 0,
                 card_root: str = "datasets", vectorization: str = "sync", final_table: bool = False,
                 final_json: str | None = None, primary_only: bool = False):  # fmt: skip
        """
        Args:
            every_n_val_epochs: evaluate after every n-th validation epoch.
            episodes: episodes per test task (split across ranks).
            seed: base seed of the episodes' resets.
            prompt_seed: which expert prompt of each test task's pool is used.
            card_root: dataset root whose cards define the normalised score.
            vectorization: "sync" or "async" gymnasium vector env.
            final_table: evaluate once more when fit ends, print a per-task table of every prompt set and
                write it to <log_dir>/rollout_final.json.
            final_json: write the final summary to this file instead (also without a logger).
            primary_only: evaluate only the method's own prompt set (`module.primary_set`).
        """
        super().__init__()
        self.every, self.episodes, self.seed, self.prompt_seed = every_n_val_epochs, episodes, seed, prompt_seed
        self.card_root, self.vectorization, self.final_table = card_root, vectorization, final_table
        self.final_json, self.primary_only = final_json, primary_only
        self._val_epochs = 0
        self.last: dict | None = None

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._val_epochs += 1
        if self._val_epochs % self.every == 0:
            self._run(trainer, module, prefix="rollout")

    def on_test_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        summary = self._run(trainer, module, prefix="test_rollout")
        log_dir = trainer.log_dir  # a collective under DDP: every rank asks
        if trainer.is_global_zero and log_dir:
            path = Path(log_dir) / "rollout_test.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(summary, indent=1) + "\n")

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not self.final_table:
            return
        summary = self._run(trainer, module, prefix=None)
        log_dir = trainer.log_dir  # a collective under DDP: every rank asks
        if trainer.is_global_zero:
            print(format_table(summary))
            path = None
            if self.final_json:
                path = Path(self.final_json)
            elif log_dir and trainer.logger is not None:  # no logger: nothing is written
                path = Path(log_dir) / "rollout_final.json"
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".tmp")  # never a half-written summary
                tmp.write_text(json.dumps(summary, indent=1) + "\n")
                tmp.replace(path)

    def _prompt_sets(self, trainer: L.Trainer, module: L.LightningModule, tasks: list[int]) -> dict[str, dict] | None:
        if not hasattr(module, "rollout_prompt_sets"):
            return None
        sets = module.rollout_prompt_sets(trainer.datamodule, tasks, self.prompt_seed)
        if self.primary_only:
            sets = {module.primary_set: sets[module.primary_set]}
        return sets

    def _run(self, trainer: L.Trainer, module: L.LightningModule, prefix: str | None) -> dict:
        """Evaluate every prompt set; log under `prefix` (None: no logging); return the summary."""
        family = module.family
        tasks = list(getattr(module, "rollout_tasks", family.test_tasks))
        was_training = module.training
        sets = self._prompt_sets(trainer, module, tasks)
        single = sets is None
        if single:
            sets = {"expert": trainer.datamodule.expert_prompts(tasks, self.prompt_seed)}
        summary = {"family": family.name, "episodes": self.episodes, "seed": self.seed,
                   "prompt_seed": self.prompt_seed, "sets": {}}  # fmt: skip
        if not single:
            summary.update(method=type(module).__name__, primary=module.primary_set,
                           tuned_parameters=int(module.num_tuned_parameters))
        for name, prompts in sets.items():
            result = self._evaluate(trainer, module, tasks, prompts)
            summary["sets"][name] = result
            if prefix is not None:
                suffix = "" if single else f"/{name}"
                for t in tasks:
                    module.log(f"{prefix}/return_task{t}{suffix}", result["tasks"][t]["return_mean"])
                for key in ("return_mean", "score_mean", "success_mean"):
                    if key in result:
                        module.log(f"{prefix}/{key}{suffix}", result[key])
        module.train(was_training)
        if single:  # pre-training: the expert set is the whole summary, as before
            summary.update(summary.pop("sets")["expert"])
        self.last = summary
        return summary

    def _evaluate(self, trainer: L.Trainer, module: L.LightningModule, tasks: list[int], prompts: dict) -> dict:
        family = module.family
        world, rank = trainer.world_size, trainer.global_rank
        mine = list(range(rank, self.episodes, world))
        sums = torch.zeros(len(tasks), 3, dtype=torch.float64)  # return sum, episodes, successes
        if mine:
            kw = dict(card_root=self.card_root, vectorization=self.vectorization, episode_ids=mine, seed=self.seed)
            if getattr(module, "policy_per_task", False):
                per = {t: evaluate(module.rollout_policy(t), family, [t], {t: prompts[t]}, len(mine), **kw)["tasks"][t]
                       for t in tasks}  # fmt: skip
            else:
                per = evaluate(module.rollout_policy(), family, tasks, prompts, len(mine), **kw)["tasks"]
            for j, t in enumerate(tasks):
                entry = per[t]
                sums[j, 0] = float(np.sum(entry["returns"]))
                sums[j, 1] = len(entry["returns"])
                sums[j, 2] = entry.get("success_rate", 0.0) * len(entry["returns"])
        sums = trainer.strategy.reduce(sums.to(module.device), reduce_op="sum").cpu()
        means = (sums[:, 0] / sums[:, 1]).tolist()
        scores = _scores(family.name, tasks, means, self.card_root)
        out = {"tasks": {}}
        for j, t in enumerate(tasks):
            out["tasks"][t] = {"return_mean": means[j], "normalised_score": scores[j]}
            if family.has_success:
                out["tasks"][t]["success_rate"] = float(sums[j, 2] / sums[j, 1])
        out["return_mean"] = float(np.mean(means))
        if all(s is not None for s in scores):
            out["score_mean"] = float(np.mean(scores))
        if family.has_success:
            out["success_mean"] = float(sums[:, 2].sum() / sums[:, 1].sum())
        return out


def format_table(summary: dict) -> str:
    """Per test task, the mean return of every prompt set side by side (plain text)."""
    sets = summary.get("sets") or {"expert": summary}
    names = list(sets)
    tasks = list(next(iter(sets.values()))["tasks"])
    head = f"{summary['family']}: mean return over {summary['episodes']} episodes per test task (seed {summary['seed']})"
    rows = [["task", *[f"{n} prompt" for n in names]]]
    for t in tasks:
        rows.append([str(t), *[f"{sets[n]['tasks'][t]['return_mean']:.1f}" for n in names]])
    rows.append(["mean", *[f"{sets[n]['return_mean']:.1f}" for n in names]])
    if all("score_mean" in sets[n] for n in names):
        rows.append(["score", *[f"{sets[n]['score_mean']:.3f}" for n in names]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [head] + ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(2, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _scores(family: str, tasks: list[int], means: list[float], root: str) -> list[float | None]:
    from promptdiff.data.cards import load_card

    try:
        card = load_card(family, root)["tasks"]
    except FileNotFoundError:
        return [None] * len(tasks)
    out = []
    for t, m in zip(tasks, means):
        row = card.get(str(t))
        out.append(None if row is None else (m - row["random_return"]) / (row["expert_return"] - row["random_return"]))
    return out
