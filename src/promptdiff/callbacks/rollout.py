"""Roll the policy out on the module's tasks during training and in `promptdiff test`.

Every `every_n_val_epochs` validation epochs (never during the sanity check) the callback asks the
module for its tasks, prompt sets and policy (`promptdiff.callbacks.targets`: the test tasks, or the
held-out training tasks under `split: val`), runs the batched evaluator and logs the results.

* A prompt-tuning method returns named prompt sets, e.g. {"generated": ..., "expert": ...}; each set
  is evaluated with the same episodes and logged side by side as

      rollout/return_task<k>/<set>, rollout/return_mean/<set>, rollout/score_mean/<set>, rollout/success_mean/<set>

* Pre-training has one set, the expert prompts of its data module, logged as

      rollout/return_task<k>, rollout/return_mean, rollout/score_mean (normalised), rollout/success_mean

Each set's result is the evaluator's schema (`promptdiff.rollout.evaluator`: per task the episodes'
returns, their mean and std, the normalised score, the success rate), the same that is logged and
written to JSON.

With `final_table` the callback also evaluates once at the end of `fit`, prints per test task
the return of every prompt set side by side, logs the same numbers to the trainer's loggers under
`rollout_final/...` (at the last step) and writes `<log_dir>/rollout_final.json` (or the
file `final_json` names, also without a logger), which also records the data files the run read, by
content digest (`data`: `promptdiff.data.segments.data_record`). The summary names the method's own set
(`primary`) and its number of tuned parameters; `primary_only` evaluates that set alone (the
benchmark runs the expert prompt as its own method).

Methods whose network differs per task (`policy_per_task`) are evaluated task by task with
`rollout_policy(task)`; episode seeds depend on (seed, task, episode) only, so the numbers are
the same as one batched evaluation would give.

Under DDP the episodes are split across ranks (rank r plays episodes r, r + world, ...); the
per-episode results are reduced and summarised once, so every rank logs the same numbers and a
ModelCheckpoint can monitor them. Rank 0 shows a progress bar over each evaluation's steps when the
trainer shows its own. In `promptdiff test` the same evaluation runs once and the summary is also
written as JSON to `<log_dir>/rollout_test.json`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from promptdiff.callbacks import targets
from promptdiff.data.segments import data_record
from promptdiff.rollout import evaluate
from promptdiff.rollout.evaluator import summarise
from promptdiff.threads import cpu_model


class RolloutCallback(L.Callback):
    def __init__(self, every_n_val_epochs: int = 1, episodes: int = 20, seed: int = 0, prompt_seed: int = 0,
                 card_root: str | None = None, vectorization: str = "sync", final_table: bool = False,
                 final_json: str | None = None, primary_only: bool = False, precision: str = "32"):  # fmt: skip
        """
        Args:
            every_n_val_epochs: evaluate after every n-th validation epoch.
            episodes: episodes per test task (split across ranks).
            seed: base seed of the episodes' resets.
            prompt_seed: which expert prompt of each test task's pool is used.
            card_root: dataset root whose cards define the normalised score (default: the data module's root).
            vectorization: "sync" or "async" gymnasium vector env.
            final_table: evaluate once more when fit ends, print a per-task table of every prompt set and
                write it to <log_dir>/rollout_final.json.
            final_json: write the final summary to this file instead (also without a logger).
            primary_only: evaluate only the method's own prompt set (`module.primary_set`).
            precision: "32" or "bf16": the policy's steps under bfloat16 autocast (for GPUs; see `DTPolicy`).
        """
        super().__init__()
        self.every, self.episodes, self.seed, self.prompt_seed = every_n_val_epochs, episodes, seed, prompt_seed
        self.card_root, self.vectorization, self.final_table = card_root, vectorization, final_table
        self.final_json, self.primary_only = final_json, primary_only
        if str(precision) not in ("32", "bf16"):
            raise ValueError(f"RolloutCallback precision {precision!r}: expected '32' or 'bf16'")
        self.precision = str(precision)
        self._val_epochs = 0
        self.last: dict | None = None
        self._last_sets: tuple[list[int], dict, bool] | None = None  # tasks, results per set, prompt tuning?

    def _policy(self, module: L.LightningModule, task: int | None = None):
        policy = targets.policy(module, task)
        policy.precision = self.precision
        return policy

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
            # module.log is closed once fit ends: the final numbers go to the loggers directly
            for logger in trainer.loggers:
                logger.log_metrics(self.last_metrics("rollout_final"), step=trainer.global_step)
                logger.save()
            print(format_table(summary))
            summary["data"] = data_record(trainer.datamodule, module.family)  # the files it read, by content
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

    def teardown(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        """Under DDP, end the process group here, every rank together, while the interpreter is whole.

        Left to process exit, the gloo group is torn down during interpreter shutdown; a rank leaving while its
        peer still prints the final table then aborted about one run in ten ("terminate called without an active
        exception", SIGABRT, after a successful fit). A later `trainer.test` in the same process starts a new
        group (Lightning initialises one when none exists)."""
        import torch.distributed as dist

        if stage == "fit" and trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    def _card_root(self, trainer: L.Trainer) -> str:
        if self.card_root is not None:
            return self.card_root
        hparams = getattr(trainer.datamodule, "hparams", None) or {}
        return str(hparams.get("root", "datasets"))

    def _run(self, trainer: L.Trainer, module: L.LightningModule, prefix: str | None) -> dict:
        """Evaluate every prompt set; log under `prefix` (None: no logging); return the summary."""
        family = module.family
        tasks = targets.rollout_tasks(module)
        tuning = targets.is_prompt_tuning(module)
        only = module.primary_set if self.primary_only else None
        sets = targets.prompt_sets(module, trainer.datamodule, tasks, self.prompt_seed, only=only)
        # the thread count is recorded: float32 matmuls split over a different number of threads round differently,
        # and over a 1,000-step episode such differences can grow into different returns
        # and so is the CPU and the kernels torch chose for it (AVX512, AVX2, ...): they round differently too
        summary = {"family": family.name, "episodes": self.episodes, "seed": self.seed,
                   "prompt_seed": self.prompt_seed, "torch_threads": torch.get_num_threads(),
                   "cpu": cpu_model(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
                   "world_size": trainer.world_size, "sets": {}}  # fmt: skip
        if tuning:
            summary.update(method=type(module).__name__, primary=module.primary_set,
                           tuned_parameters=int(module.num_tuned_parameters))
        was_training = module.training
        bar = trainer.is_global_zero and trainer.progress_bar_callback is not None
        for name, prompts in sets.items():
            label = f"{prefix or 'final rollout'} ({name} prompt)" if bar else None
            summary["sets"][name] = self._evaluate(trainer, module, tasks, prompts, label)
        self._last_sets = (tasks, summary["sets"], tuning)
        if prefix is not None:
            for key, value in self.last_metrics(prefix).items():
                module.log(key, value)
        module.train(was_training)
        if not tuning:  # pre-training: the expert set is the whole summary
            summary.update(summary.pop("sets")[module.primary_set])
        self.last = summary
        return summary

    def last_metrics(self, prefix: str) -> dict[str, float]:
        """The last evaluation as scalars: <prefix>/return_task<k>[/<set>] and <prefix>/{return,score,success}_mean[/<set>]
        (the set suffix for prompt-tuning methods only)."""
        tasks, sets, tuning = self._last_sets
        out = {}
        for name, result in sets.items():
            suffix = f"/{name}" if tuning else ""
            for t in tasks:
                out[f"{prefix}/return_task{t}{suffix}"] = result["tasks"][t]["return_mean"]
            for key in ("return_mean", "score_mean", "success_mean"):
                if result.get(key) is not None:
                    out[f"{prefix}/{key}{suffix}"] = result[key]
        return out

    def _evaluate(self, trainer: L.Trainer, module: L.LightningModule, tasks: list[int], prompts: dict,
                  progress: str | None = None) -> dict:  # fmt: skip
        """This rank's share of the episodes, reduced over ranks, summarised by the evaluator's `summarise`."""
        family = module.family
        world, rank = trainer.world_size, trainer.global_rank
        mine = list(range(rank, self.episodes, world))
        E = self.episodes
        played = torch.zeros(len(tasks), E, 3, dtype=torch.float64)  # return, length, success per episode
        calls = torch.zeros(1, dtype=torch.float64)
        start = time.perf_counter()
        if mine:
            kw = dict(card_root=self._card_root(trainer), vectorization=self.vectorization, episode_ids=mine,
                      seed=self.seed, progress=progress)  # fmt: skip
            if getattr(module, "policy_per_task", False):
                results = [evaluate(self._policy(module, t), family, [t], {t: prompts[t]}, len(mine), **kw) for t in tasks]
                per = {t: r["tasks"][t] for t, r in zip(tasks, results)}
                calls += sum(r["policy_calls"] for r in results)
            else:
                result = evaluate(self._policy(module), family, tasks, prompts, len(mine), **kw)
                per, calls = result["tasks"], calls + result["policy_calls"]
            for j, t in enumerate(tasks):
                played[j, mine, 0] = torch.tensor(per[t]["returns"], dtype=torch.float64)
                played[j, mine, 1] = torch.tensor(per[t]["lengths"], dtype=torch.float64)
                played[j, mine, 2] = torch.tensor(per[t].get("successes", [False] * len(mine)), dtype=torch.float64)
        played = trainer.strategy.reduce(played.to(module.device), reduce_op="sum").cpu().numpy()
        calls = float(trainer.strategy.reduce(calls.to(module.device), reduce_op="sum").cpu())
        wall = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
        wall = float(trainer.strategy.reduce(wall.to(module.device), reduce_op="mean").cpu())  # the same on every rank
        flat = played.reshape(len(tasks) * E, 3)
        return summarise(family, tasks, E, flat[:, 0], flat[:, 1].astype(np.int64), flat[:, 2] > 0.5, int(calls),
                         self._card_root(trainer), wall)  # fmt: skip


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
    if all(sets[n].get("score_mean") is not None for n in names):
        rows.append(["score", *[f"{sets[n]['score_mean']:.3f}" for n in names]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [head] + ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(2, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
