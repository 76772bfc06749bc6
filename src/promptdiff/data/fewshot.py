"""Few-shot data for prompt tuning: prompt windows for the diffuser, K-step segments for the PLM.

On a test task a prompt-tuning method sees only the task's few-shot data: its prompt pool (5
expert trajectories per task). `FewShotDataModule` serves, for every task of its split, in
every batch:

* `batch_size` random WINDOWS of `prompt_length` consecutive steps, from every position of the
  few-shot trajectories (not only their tails). A window is what the diffuser learns to
  generate (x0 = states, actions, rewards) and its condition (y = returns-to-go, timesteps);
* `batch_size` K-step SEGMENTS of the same few-shot trajectories (uniform random starts, left
  padded), on which the frozen PLM's action loss is measured.

The randomness of the diffusion loss (steps, noise, condition dropout) is the method's own: Prompt
Diffuser draws it keyed by the same (seed, rank, step), so resume stays exact.

Every field has a leading task axis: shape (T, B, ...), T = len(tasks). Batch i on rank r is
drawn from the generator (seed, r, i), as in pre-training.

States are served RAW (unnormalised): the method normalises them with its frozen PLM's
statistics, so this module knows nothing of any checkpoint. Returns-to-go and rewards are
divided by the family's rtg_scale; timesteps are clipped to the horizon - 1.

Stage-1 diffuser pre-training uses the same module on the TRAINING tasks (`split: train`),
with their full training data (`source: train`) instead of the prompt pool. Hyper-parameters of
the few-shot stage are chosen on VALIDATION tasks (`split: val`): held-out training tasks
(`TaskFamily.val_tasks`) served exactly like test tasks, from their prompt pools.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from promptdiff.data.datamodule import _loader  # same endless-stream loader as pre-training
from promptdiff.data.hdf5_format import QUALITIES
from promptdiff.data.segments import SegmentSampler, TaskData, load_family_data, tail_prompts
from promptdiff.envs import get_family
from promptdiff.prompt import Prompt
from promptdiff.units import PLMUnits


class WindowSampler:
    """Vectorised sampler of length-L windows lying fully inside trajectories.

    Args:
        data: task -> TaskData; trajectories shorter than L contribute no window.
        units: L (`prompt_length`), the return scale (rewards and returns-to-go are divided by it) and the
            timestep clip. States stay raw.
    """

    def __init__(self, data: dict[int, TaskData], units: PLMUnits):
        self.tasks = list(data)
        self.L = int(units.prompt_length)
        parts = [data[t] for t in self.tasks]
        base = np.concatenate([[0], np.cumsum([d.num_steps for d in parts])[:-1]]).astype(np.int64)
        starts, counts = [], []
        for task, d, b in zip(self.tasks, parts, base):
            s = [b + o + np.arange(n - self.L + 1) for o, n in zip(d.offsets, d.lengths) if n >= self.L]
            if not s:
                raise ValueError(f"task {task}: no trajectory has {self.L} steps, so it has no prompt window")
            starts.append(np.concatenate(s))
            counts.append(len(starts[-1]))
        self.starts = np.concatenate(starts).astype(np.int64)
        self.counts = np.asarray(counts, np.int64)
        self.first = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self.states = np.concatenate([d.states for d in parts]).astype(np.float32)
        self.actions = np.concatenate([d.actions for d in parts]).astype(np.float32)
        self.rewards = units.scale_returns(np.concatenate([d.rewards for d in parts])).astype(np.float32)
        self.rtg = units.scale_returns(np.concatenate([d.returns_to_go for d in parts])).astype(np.float32)
        self.timesteps = units.clip_timesteps(np.concatenate([d.timesteps for d in parts])).astype(np.int64)
        self._ar = np.arange(self.L, dtype=np.int64)

    def num_windows(self, task: int) -> int:
        return int(self.counts[self.tasks.index(task)])

    def sample(self, tasks: list[int], B: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """B windows per task: states (T, B, L, obs_dim), actions (T, B, L, act_dim), rewards,
        returns_to_go (T, B, L) float32, timesteps (T, B, L) int64."""
        rows = np.array([self.tasks.index(t) for t in tasks], dtype=np.int64)
        pick = self.first[rows][:, None] + rng.integers(0, self.counts[rows][:, None], size=(len(rows), B))
        idx = self.starts[pick][..., None] + self._ar  # (T, B, L)
        return {"states": torch.from_numpy(self.states[idx]), "actions": torch.from_numpy(self.actions[idx]),
                "rewards": torch.from_numpy(self.rewards[idx]), "returns_to_go": torch.from_numpy(self.rtg[idx]),
                "timesteps": torch.from_numpy(self.timesteps[idx])}  # fmt: skip


class _FewShotStream(IterableDataset):
    def __init__(self, dm: "FewShotDataModule", seed: int, start, repeat: int | None = None):
        self.dm, self.seed, self.start, self.repeat = dm, seed, start, repeat

    def __iter__(self):
        i = 0 if self.repeat else self.start()
        while self.repeat is None or i < self.repeat:
            yield self.dm.draw(np.random.default_rng([self.seed, self.dm._rank(), i]))
            i += 1


class FewShotDataModule(L.LightningDataModule):
    def __init__(self, family: str, root: str = "datasets", quality: str = "expert", split: str = "test",
                 source: str = "prompt", tasks: list[int] | None = None, batch_size: int = 32,
                 context_length: int = 20, prompt_length: int = 5, seed: int = 0, val_batches: int = 2,
                 prompt_quality: str | None = None):  # fmt: skip
        """
        Args:
            family: task family.
            root: dataset root (`promptdiff fit` makes missing files from the shipped experts).
            quality: quality of the few-shot data (expert, medium, random; cheetah_vel has all three).
            split: "test" (prompt tuning on the unseen tasks), "val" (the same few-shot protocol on held-out
                training tasks, for choosing hyper-parameters) or "train" (stage-1 diffuser pre-training).
            source: "prompt" (the tasks' prompt pools, the few-shot data) or "train" (their full training
                data; only for split "train": test tasks' training data is off limits).
            tasks: narrow the split to these tasks (default: all of it; for "val": the family's val_tasks).
            batch_size: windows and segments per task in every batch.
            context_length: K, the steps of each PLM segment.
            prompt_length: L, the steps of each prompt window.
            seed: base seed of the batch stream.
            val_batches: fixed validation batches (the same every time).
            prompt_quality: quality of the pool the task's starting prompt is cut from (`tail_prompts`: the
                prompt Prompt-DT evaluates, the soft prompt and Prompt-Tuning DT start from, and Prompt
                Diffuser takes its condition y from), while tuning still reads `quality` data (default: the
                same). The prompt-initialisation study sets it apart from `quality`.
        """
        super().__init__()
        self.save_hyperparameters()
        self.family = get_family(family)
        if split not in ("test", "val", "train"):
            raise ValueError(f"split must be 'test', 'val' or 'train', got {split!r}")
        if source not in ("prompt", "train"):
            raise ValueError(f"source must be 'prompt' or 'train', got {source!r}")
        if split != "train" and source == "train":
            raise ValueError(f"source 'train' reads the {split} tasks' full data: few-shot tuning may only use their "
                             "prompt pool (source 'prompt')")  # fmt: skip
        for name, q in (("quality", quality), ("prompt_quality", prompt_quality)):
            if q is not None and q not in QUALITIES:
                raise ValueError(f"{name} must be one of {QUALITIES}, got {q!r}")
        self.tasks = self.family.split_tasks(split, tasks)
        self.windows: WindowSampler | None = None
        self.segments: SegmentSampler | None = None
        self.tails: SegmentSampler | None = None

    def required_files(self) -> list[tuple[str, str]]:
        """(role, quality) of every file this module reads: the few-shot stage reads only prompt pools."""
        hp = self.hparams
        files = [("train", hp.quality)] if hp.source == "train" else []
        files.append(("prompt", hp.quality))
        if hp.prompt_quality not in (None, hp.quality):
            files.append(("prompt", hp.prompt_quality))
        return files

    def setup(self, stage: str | None = None) -> None:
        if self.windows is not None:
            return
        hp, fam = self.hparams, self.family
        roles = ("train", "prompt") if hp.source == "train" else ("prompt",)
        train, prompt = load_family_data(fam, hp.root, hp.quality, tasks=self.tasks, roles=roles)
        data = prompt if hp.source == "prompt" else train
        units = self.units = PLMUnits.raw(fam, hp.context_length, hp.prompt_length)  # the method normalises states
        self.windows = WindowSampler(data, units)
        # segments come from `data`; the tails of the prompt pool give the starting prompts
        self.segments = self.tails = SegmentSampler(data, prompt, units)
        if hp.prompt_quality not in (None, hp.quality):  # starting prompts from another pool
            pool = load_family_data(fam, hp.root, hp.prompt_quality, tasks=self.tasks, roles=("prompt",))[1]
            self.tails = SegmentSampler(data, pool, units)

    def _rank(self) -> int:
        return self.trainer.global_rank if self.trainer is not None else 0

    def _step(self) -> int:
        return self.trainer.global_step if self.trainer is not None else 0

    def draw(self, rng: np.random.Generator) -> dict:
        """One batch (see the module docstring); every tensor has leading dims (T, B)."""
        self.setup()
        T, B = len(self.tasks), self.hparams.batch_size
        win = self.windows.sample(self.tasks, B, rng)
        _, seg, _ = self.segments.sample_all(self.tasks, B, rng)
        seg = {k: v.reshape(T, B, *v.shape[1:]) for k, v in seg.items()}
        return {"window": win, "segment": seg, "task_ids": torch.tensor(self.tasks, dtype=torch.int64)}

    def train_dataloader(self) -> DataLoader:
        return _loader(_FewShotStream(self, self.hparams.seed, self._step))

    def val_dataloader(self) -> DataLoader:
        return _loader(_FewShotStream(self, self.hparams.seed + 1_000_003, lambda: 0, repeat=self.hparams.val_batches))

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return _to(batch, device)

    def tail_prompts(self, tasks: list[int], seed: int = 0) -> dict[int, Prompt]:
        """One RAW prompt (P = 1, states unnormalised) per task: the tail of a random trajectory of
        its few-shot pool (of `prompt_quality`), drawn by `promptdiff.data.segments.tail_prompts`."""
        self.setup()
        return tail_prompts(self.tails, tasks, seed)


def _to(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj

