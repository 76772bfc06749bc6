"""LightningDataModule for multi-task Prompt-DT pre-training.

Every training batch holds, for EVERY training task of the family, `batch_size_per_task`
(prompt, K-step segment) pairs, drawn by the vectorised `SegmentSampler`. Batch i on rank r is
drawn from a generator seeded with (seed, r, i): ranks see different samples, a run is
reproducible from its seed, and a run resumed from a checkpoint at step i continues with
exactly the batches an uninterrupted run would have drawn.

The PLM's units (`promptdiff.units.PLMUnits`: state statistics of the training tasks' data
only, return scale, timestep clip, K and L) are computed here; the pre-training module saves them
in its checkpoint.
"""

from __future__ import annotations

from typing import Callable

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from promptdiff.data.segments import SegmentSampler, load_family_data, state_statistics, tail_prompts
from promptdiff.envs import get_family
from promptdiff.prompt import Prompt
from promptdiff.units import PLMUnits


class _BatchStream(IterableDataset):
    """An endless stream of ready-made batches; batch i uses the generator (seed, rank, i)."""

    def __init__(self, sampler: SegmentSampler, tasks: list[int], batch_size: int, seed: int,
                 rank: Callable[[], int], start: Callable[[], int], repeat: int | None = None):  # fmt: skip
        self.sampler, self.tasks, self.batch_size, self.seed = sampler, tasks, batch_size, seed
        self.rank, self.start, self.repeat = rank, start, repeat

    def __iter__(self):
        i = 0 if self.repeat else self.start()
        while self.repeat is None or i < self.repeat:
            rng = np.random.default_rng([self.seed, self.rank(), i])
            prompt, segment, task_ids = self.sampler.sample_all(self.tasks, self.batch_size, rng)
            yield {"prompt": prompt, "segment": segment, "task_ids": task_ids}
            i += 1


def _collate(batch):
    return batch  # batches are built whole by the sampler


def _loader(stream: IterableDataset) -> DataLoader:
    # An own generator: creating the iterator must not draw from torch's global RNG, whose
    # state (dropout) is saved with checkpoints and must continue identically after a resume.
    return DataLoader(stream, batch_size=None, collate_fn=_collate, generator=torch.Generator())


class PromptDTDataModule(L.LightningDataModule):
    def __init__(self, family: str, root: str = "datasets", quality: str = "expert", batch_size_per_task: int = 16,
                 context_length: int = 20, prompt_length: int = 5, seed: int = 0, val_batches: int = 4,
                 train_tasks: list[int] | None = None, include_test_tasks: bool = False):  # fmt: skip
        """
        Args:
            family: task family (its training tasks are pre-trained on).
            root: dataset root (`promptdiff fit` makes missing files from the shipped experts).
            quality: data quality of the training set and prompt pool (expert, medium, random).
            batch_size_per_task: (prompt, segment) pairs per training task in every batch.
            context_length: K, the steps of each segment.
            prompt_length: L, the steps of each prompt.
            seed: base seed of the batch stream.
            val_batches: fixed validation batches (same every time) drawn from the training tasks.
            train_tasks: pre-train on these tasks only (default: the family's training split).
            include_test_tasks: also pre-train on the test tasks' full training data: the full-data upper
                bound of the benchmark (datasets/<family>/plm_full.ckpt), never a few-shot PLM.
        """
        super().__init__()
        self.save_hyperparameters()
        self.family = get_family(family)
        self.train_tasks = list(self.family.train_tasks if train_tasks is None else train_tasks)
        unknown = sorted(set(self.train_tasks) - set(self.family.train_tasks))
        if unknown:
            raise ValueError(f"train_tasks {unknown} are not training tasks of {family}")
        if include_test_tasks:
            self.train_tasks += [t for t in self.family.test_tasks if t not in self.train_tasks]
        self.sampler: SegmentSampler | None = None
        self.units: PLMUnits | None = None

    def required_files(self) -> list[tuple[str, str]]:
        """(role, quality) of every file this module reads."""
        return [("train", self.hparams.quality), ("prompt", self.hparams.quality)]

    def setup(self, stage: str | None = None) -> None:
        if self.sampler is not None:
            return
        hp = self.hparams
        narrowed = sorted(set(self.train_tasks) | set(self.family.test_tasks)) if hp.train_tasks is not None else None
        train, prompt = load_family_data(self.family, hp.root, hp.quality, tasks=narrowed)
        mean, std = state_statistics({t: train[t] for t in self.train_tasks})
        raw = PLMUnits.raw(self.family, hp.context_length, hp.prompt_length)
        self.units = raw.with_states(mean, std)
        self.sampler = SegmentSampler(train, prompt, self.units)

    def _rank(self) -> int:
        return self.trainer.global_rank if self.trainer is not None else 0

    def _step(self) -> int:
        return self.trainer.global_step if self.trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        stream = _BatchStream(self.sampler, self.train_tasks, self.hparams.batch_size_per_task,
                              self.hparams.seed, self._rank, self._step)  # fmt: skip
        return _loader(stream)

    def val_dataloader(self) -> DataLoader:
        stream = _BatchStream(self.sampler, self.train_tasks, self.hparams.batch_size_per_task,
                              self.hparams.seed + 1_000_003, self._rank, lambda: 0, repeat=self.hparams.val_batches)  # fmt: skip
        return _loader(stream)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def tail_prompts(self, tasks: list[int], seed: int = 0) -> dict[int, Prompt]:
        """One prompt (P = 1, PLM units) per task: the tail of a random trajectory of its prompt pool."""
        self.setup()
        return tail_prompts(self.sampler, tasks, seed)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return {"prompt": batch["prompt"].to(device),
                "segment": {k: v.to(device) for k, v in batch["segment"].items()},
                "task_ids": batch["task_ids"].to(device)}  # fmt: skip

    def plm_units(self) -> PLMUnits:
        """The units of a PLM pre-trained on this module's data."""
        self.setup()
        return self.units
