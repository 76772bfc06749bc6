"""Roll the policy out on the family's test tasks during training and in `promptdiff test`.

Every `every_n_val_epochs` validation epochs (never during the sanity check) the callback asks
the LightningModule for a `DTPolicy` (`rollout_policy()`) and the DataModule for one expert
prompt per test task (`expert_prompts(tasks, seed)`), runs the batched evaluator and logs

    rollout/return_task<k>, rollout/return_mean, rollout/score_mean (normalised), rollout/success_mean

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
                 card_root: str = "datasets", vectorization: str = "sync"):  # fmt: skip
        """
        Args:
            every_n_val_epochs: evaluate after every n-th validation epoch.
            episodes: episodes per test task (split across ranks).
            seed: base seed of the episodes' resets.
            prompt_seed: which expert prompt of each test task's pool is used.
            card_root: dataset root whose cards define the normalised score.
            vectorization: "sync" or "async" gymnasium vector env.
        """
        super().__init__()
        self.every, self.episodes, self.seed, self.prompt_seed = every_n_val_epochs, episodes, seed, prompt_seed
        self.card_root, self.vectorization = card_root, vectorization
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
        if trainer.is_global_zero and trainer.log_dir:
            path = Path(trainer.log_dir) / "rollout_test.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(summary, indent=1) + "\n")

    def _run(self, trainer: L.Trainer, module: L.LightningModule, prefix: str) -> dict:
        family = module.family
        tasks = list(family.test_tasks)
        prompts = trainer.datamodule.expert_prompts(tasks, self.prompt_seed)
        world, rank = trainer.world_size, trainer.global_rank
        mine = list(range(rank, self.episodes, world))
        sums = torch.zeros(len(tasks), 3, dtype=torch.float64)  # return sum, episodes, successes
        was_training = module.training
        if mine:
            result = evaluate(module.rollout_policy(), family, tasks, prompts, len(mine), seed=self.seed,
                              card_root=self.card_root, vectorization=self.vectorization, episode_ids=mine)  # fmt: skip
            for j, t in enumerate(tasks):
                entry = result["tasks"][t]
                sums[j, 0] = float(np.sum(entry["returns"]))
                sums[j, 1] = len(entry["returns"])
                sums[j, 2] = entry.get("success_rate", 0.0) * len(entry["returns"])
        module.train(was_training)
        sums = trainer.strategy.reduce(sums.to(module.device), reduce_op="sum").cpu()
        means = (sums[:, 0] / sums[:, 1]).tolist()
        summary = {"family": family.name, "episodes": self.episodes, "seed": self.seed,
                   "prompt_seed": self.prompt_seed, "tasks": {}}  # fmt: skip
        scores = _scores(family.name, tasks, means, self.card_root)
        for j, t in enumerate(tasks):
            summary["tasks"][t] = {"return_mean": means[j], "normalised_score": scores[j]}
            module.log(f"{prefix}/return_task{t}", means[j])
            if family.has_success:
                summary["tasks"][t]["success_rate"] = float(sums[j, 2] / sums[j, 1])
        summary["return_mean"] = float(np.mean(means))
        module.log(f"{prefix}/return_mean", summary["return_mean"])
        if all(s is not None for s in scores):
            summary["score_mean"] = float(np.mean(scores))
            module.log(f"{prefix}/score_mean", summary["score_mean"])
        if family.has_success:
            summary["success_mean"] = float(sums[:, 2].sum() / sums[:, 1].sum())
            module.log(f"{prefix}/success_mean", summary["success_mean"])
        self.last = summary
        return summary


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
