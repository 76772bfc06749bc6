"""Packed per-task data and the vectorised (prompt, segment) sampler of Prompt-DT training.

Three pieces, plain numpy + torch:

`TaskData`
    All trajectories of one task packed into flat step arrays (states, actions, rewards,
    returns-to-go, timesteps) plus per-trajectory offsets and lengths.

`SegmentSampler`
    Draws training batches. Each sample pairs
      * a PROMPT: the tail of a random prompt-pool trajectory of the task, the `prompt_length`
        steps ending at step T-2 (for L = 5: steps T-6 .. T-2), and
      * a SEGMENT: the up-to-K steps starting at a uniformly random step of a random training
        trajectory of the same task.
    Both are LEFT-padded to their length and returned in the PLM's units (see
    `promptdiff.prompt`). Drawing is fully vectorised: every sample of every task is
    gathered by one fancy-indexing operation per field.

`state_statistics`, `load_family_data`
    State normalisation statistics (training tasks only) and loading a family's files.

Units (state normalisation, return scale, timestep clipping, padding) are those of one
`promptdiff.units.PLMUnits`; raw units (no state statistics) leave states unnormalised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from promptdiff.data.hdf5_format import DatasetError, Trajectory, content_digest, dataset_path, open_trajectories
from promptdiff.prompt import Prompt
from promptdiff.units import PLMUnits

__all__ = ["TaskData", "SegmentSampler", "state_statistics", "load_family_data", "tail_prompts"]


# -- packed per-task data -----------------------------------------------------------------------


@dataclass
class TaskData:
    """All trajectories of one task, packed step by step (N steps over n trajectories).

        states         (N, obs_dim)  float32  o_t for t < T (each trajectory's observations[:-1])
        actions        (N, act_dim)  float32  a_t
        rewards        (N,)          float32  r_t
        returns_to_go  (N,)          float32  sum_{t' >= t} r_t' up to the episode end, undiscounted
        timesteps      (N,)          int64    t, the step index within its episode
        offsets        (n,)          int64    index of each trajectory's first step
        lengths        (n,)          int64    T of each trajectory (>= 1)

    Trajectory i occupies rows offsets[i] : offsets[i] + lengths[i], in the order given.
    """

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    returns_to_go: np.ndarray
    timesteps: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    task_id: int | None = None

    @classmethod
    def from_trajectories(cls, trajectories: Sequence[Trajectory], task_id: int | None = None) -> "TaskData":
        """Pack a list of trajectories (of one task); raise ValueError on empty input or episodes."""
        trajectories = list(trajectories)
        if not trajectories:
            raise ValueError("TaskData needs at least one trajectory")
        lengths = np.array([len(t) for t in trajectories], dtype=np.int64)
        if np.any(lengths < 1):
            bad = int(np.flatnonzero(lengths < 1)[0])
            raise ValueError(f"trajectory {bad} has no steps")
        if task_id is None:
            ids = {int(t.task_id) for t in trajectories}
            task_id = ids.pop() if len(ids) == 1 else None
        offsets = np.zeros(len(trajectories), dtype=np.int64)
        offsets[1:] = np.cumsum(lengths)[:-1]
        states = np.concatenate([np.asarray(t.observations[: len(t)], np.float32) for t in trajectories])
        actions = np.concatenate([np.asarray(t.actions, np.float32) for t in trajectories])
        rewards = np.concatenate([np.asarray(t.rewards, np.float32).reshape(-1) for t in trajectories])
        # returns-to-go: reversed cumulative sum within each episode, accumulated in float64
        rtg = np.concatenate([np.cumsum(np.asarray(t.rewards, np.float64)[::-1])[::-1] for t in trajectories])
        timesteps = np.concatenate([np.arange(n, dtype=np.int64) for n in lengths])
        return cls(states=states, actions=actions, rewards=rewards, returns_to_go=rtg.astype(np.float32),
                   timesteps=timesteps, offsets=offsets, lengths=lengths, task_id=task_id)  # fmt: skip

    @property
    def num_steps(self) -> int:
        return int(self.states.shape[0])

    @property
    def num_trajectories(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.states.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    def trajectory_slice(self, i: int) -> slice:
        """The rows of trajectory i."""
        start = int(self.offsets[i])
        return slice(start, start + int(self.lengths[i]))


def state_statistics(train_data: Mapping[int, TaskData]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (each (obs_dim,), float64) over every state of the given tasks.

    Pass the TRAINING tasks only: test-task data must not leak into the normalisation. The std
    is floored at 1e-6 so that constant state dimensions normalise to 0 instead of NaN.
    """
    if not train_data:
        raise ValueError("state_statistics needs at least one task")
    states = np.concatenate([np.asarray(d.states, np.float64) for d in train_data.values()])
    return states.mean(axis=0), np.maximum(states.std(axis=0), 1e-6)


# -- sampler ------------------------------------------------------------------------------------


class _Pool:
    """Several tasks' TaskData in one set of flat arrays, ready for fancy-index gathering.

    The step arrays hold one extra final row, the PAD row (state 0, action ACTION_PAD, rtg 0,
    timestep 0); padding positions index it, so a gather needs no masking afterwards. States are
    stored normalised and returns-to-go already divided by rtg_scale.
    """

    def __init__(self, data: Mapping[int, TaskData], units: PLMUnits):
        self.tasks = list(data)
        self.row = {t: i for i, t in enumerate(self.tasks)}  # task -> row in the per-task tables
        parts = [data[t] for t in self.tasks]
        n_steps = np.array([d.num_steps for d in parts], dtype=np.int64)
        step_base = np.concatenate([[0], np.cumsum(n_steps)[:-1]]).astype(np.int64)
        n_traj = np.array([d.num_trajectories for d in parts], dtype=np.int64)
        self.first_traj = np.concatenate([[0], np.cumsum(n_traj)[:-1]]).astype(np.int64)  # (tasks,)
        self.num_traj = n_traj  # (tasks,)
        # global trajectory table
        self.traj_offset = np.concatenate([d.offsets + b for d, b in zip(parts, step_base)]).astype(np.int64)
        self.traj_length = np.concatenate([d.lengths for d in parts]).astype(np.int64)
        self.pad_row = int(n_steps.sum())

        states = units.normalise_states(np.concatenate([d.states for d in parts])).astype(np.float32)
        obs_dim, act_dim = states.shape[1], parts[0].act_dim
        self.states = np.concatenate([states, np.zeros((1, obs_dim), np.float32)])
        actions = np.concatenate([d.actions for d in parts]).astype(np.float32)
        self.actions = np.concatenate([actions, np.full((1, act_dim), units.action_pad, np.float32)])
        rtg = units.scale_returns(np.concatenate([d.returns_to_go for d in parts]))
        self.rtg = np.concatenate([rtg.astype(np.float32), [0.0]]).astype(np.float32)[:, None]  # (N+1, 1)
        ts = np.concatenate([d.timesteps for d in parts]).astype(np.int64)
        self.timesteps = np.concatenate([units.clip_timesteps(ts), [0]]).astype(np.int64)

    def task_rows(self, tasks: Sequence[int], what: str) -> np.ndarray:
        try:
            return np.array([self.row[t] for t in tasks], dtype=np.int64)
        except KeyError as err:
            raise KeyError(f"task {err.args[0]} has no {what} data (have {sorted(self.tasks)})") from None

    def pick_trajectories(self, rows: np.ndarray, B: int, rng: np.random.Generator) -> np.ndarray:
        """(len(rows), B) global trajectory indices, uniform within each task."""
        local = rng.integers(0, self.num_traj[rows][:, None], size=(len(rows), B))
        return self.first_traj[rows][:, None] + local

    def gather(self, flat_idx: np.ndarray) -> dict[str, torch.Tensor]:
        """Fields at flat step indices (M, L) (pad_row for padding) as torch tensors."""
        return {
            "states": torch.from_numpy(self.states[flat_idx]),
            "actions": torch.from_numpy(self.actions[flat_idx]),
            "returns_to_go": torch.from_numpy(self.rtg[flat_idx]),
            "timesteps": torch.from_numpy(self.timesteps[flat_idx]),
            "mask": torch.from_numpy((flat_idx != self.pad_row).astype(np.float32)),
        }


class SegmentSampler:
    """Vectorised sampler of (prompt, K-step segment) pairs for multi-task Prompt-DT training.

    Args:
        train_data: task -> TaskData of the training set (segments are drawn from it).
        prompt_data: task -> TaskData of the prompt pool (prompts are drawn from it).
        units: the PLM's units: state statistics (None: raw states), return scale, timestep clip,
            K (segment length) and L (prompt length).

    Everything the draws need (normalised states, scaled returns-to-go, clipped timesteps, the
    trajectory tables) is precomputed here; a draw is a handful of random-integer calls and one
    fancy-indexing gather per field, with no Python loop over samples or tasks.
    """

    def __init__(self, train_data: Mapping[int, TaskData], prompt_data: Mapping[int, TaskData], units: PLMUnits):
        if not train_data or not prompt_data:
            raise ValueError("SegmentSampler needs training data and prompt data")
        dims = {(d.obs_dim, d.act_dim) for d in (*train_data.values(), *prompt_data.values())}
        if len(dims) != 1:
            raise ValueError(f"tasks disagree on (obs_dim, act_dim): {sorted(dims)}")
        self.obs_dim, self.act_dim = dims.pop()
        if units.obs_dim not in (None, self.obs_dim):
            raise ValueError(f"state statistics have {units.obs_dim} dimensions, the data {self.obs_dim}")
        self.units = units
        self.K, self.prompt_length = units.context_length, units.prompt_length
        self._train = _Pool(train_data, units)
        self._prompt = _Pool(prompt_data, units)
        self._arange_K = np.arange(self.K, dtype=np.int64)
        self._arange_L = np.arange(self.prompt_length, dtype=np.int64)

    @property
    def tasks(self) -> list[int]:
        """Tasks that have both training and prompt data."""
        return [t for t in self._train.tasks if t in self._prompt.row]

    # -- index computation (numpy only) ----------------------------------------------------------
    def _prompt_indices(self, rows: np.ndarray, B: int, rng: np.random.Generator) -> np.ndarray:
        """(len(rows) * B, L) flat prompt-pool indices: tails of random prompt trajectories.

        The tail of a trajectory of length T is the L steps ending at step T-2, i.e. steps
        T-1-L .. T-2 (the last step is left out, as in Prompt-DT); steps before 0 are padding.
        A one-step trajectory gives its only step.
        """
        pool = self._prompt
        traj = pool.pick_trajectories(rows, B, rng).reshape(-1)
        offset, length = pool.traj_offset[traj], pool.traj_length[traj]
        last = np.maximum(length - 2, 0)  # (M,) index of the final prompt step
        steps = last[:, None] - (self.prompt_length - 1) + self._arange_L  # (M, L)
        return np.where(steps >= 0, offset[:, None] + steps, pool.pad_row)

    def _segment_indices(self, rows: np.ndarray, B: int, rng: np.random.Generator) -> np.ndarray:
        """(len(rows) * B, K) flat training indices: K-step windows at uniform random starts.

        A window starting at step s of a length-T trajectory holds steps s .. min(s+K, T)-1,
        right-aligned (left-padded), so it never crosses into another trajectory.
        """
        pool = self._train
        traj = pool.pick_trajectories(rows, B, rng).reshape(-1)
        offset, length = pool.traj_offset[traj], pool.traj_length[traj]
        start = rng.integers(0, length)  # (M,) uniform in [0, T-1]
        n_real = np.minimum(self.K, length - start)  # (M,)
        steps = start[:, None] + self._arange_K - (self.K - n_real)[:, None]  # (M, K)
        return np.where(steps >= start[:, None], offset[:, None] + steps, pool.pad_row)

    # -- public draws ----------------------------------------------------------------------------
    def _draw(self, tasks: Sequence[int], B: int, rng: np.random.Generator) -> tuple[Prompt, dict[str, torch.Tensor]]:
        if B < 1:
            raise ValueError(f"batch size must be >= 1, got {B}")
        prompt_rows = self._prompt.task_rows(tasks, "prompt")
        train_rows = self._train.task_rows(tasks, "training")
        prompt = Prompt(**self._prompt.gather(self._prompt_indices(prompt_rows, B, rng)))
        segment = self._train.gather(self._segment_indices(train_rows, B, rng))
        return prompt, segment

    def sample(self, task: int, B: int, rng: np.random.Generator) -> tuple[Prompt, dict[str, torch.Tensor]]:
        """B (prompt, segment) pairs of one task.

        Returns:
            prompt: a `Prompt` with P = B, length L = prompt_length (states (B, L, obs_dim), ...).
            segment: dict of tensors
                states         (B, K, obs_dim)  float32  normalised
                actions        (B, K, act_dim)  float32  raw, ACTION_PAD on padding
                returns_to_go  (B, K, 1)        float32  divided by rtg_scale
                timesteps      (B, K)           int64    clipped to max_timestep - 1
                mask           (B, K)           float32  1 for real steps, 0 for left padding
        """
        return self._draw([task], B, rng)

    def sample_all(self, tasks: Iterable[int], B: int, rng: np.random.Generator
                   ) -> tuple[Prompt, dict[str, torch.Tensor], torch.Tensor]:  # fmt: skip
        """B pairs for each task, drawn together: rows [i*B, (i+1)*B) belong to tasks[i].

        Each block has the distribution of `sample(tasks[i], B)`, but all tasks share one set of
        random calls, so the rows are not those of successive `sample` calls with the same rng.

        Returns:
            prompt: `Prompt` with P = B * len(tasks).
            segment: dict as in `sample`, leading dimension B * len(tasks).
            task_ids: (B * len(tasks),) int64, the task of every row.
        """
        tasks = [int(t) for t in tasks]
        if not tasks:
            raise ValueError("sample_all needs at least one task")
        prompt, segment = self._draw(tasks, B, rng)
        task_ids = torch.from_numpy(np.repeat(np.asarray(tasks, np.int64), B))
        return prompt, segment, task_ids


# -- loading ------------------------------------------------------------------------------------


def load_family_data(family, root: str | Path = "datasets", quality: str = "expert", tasks: Iterable[int] | None = None,
                     roles: Sequence[str] = ("train", "prompt")) -> tuple[dict[int, TaskData] | None, ...]:  # fmt: skip
    """Load the training set and prompt pool of a family's tasks (reading only: nothing is generated).

    `family` is a name or a `TaskFamily`; families that share data (ant_dir_ood) read their data
    family's files. `tasks` narrows the load (default: every train and test task). `roles` names the
    files to read; the other entry of the result is None. A missing file is a `DatasetError` that
    names the command which writes it. Returns (train, prompt), each task -> TaskData, ascending.
    """
    from promptdiff.envs import get_family

    fam = get_family(family) if isinstance(family, str) else family
    tasks = sorted(set(fam.train_tasks) | set(fam.test_tasks) if tasks is None else set(tasks))
    out = {}
    for role in roles:
        path = dataset_path(fam.dataset_family, role, quality, root)
        if not path.exists():
            raise DatasetError(path, f"file not found: make it with `{fam.collect_command(role, quality, root)}` "
                                     f"(`promptdiff fit` makes the files its run reads when they are missing)")  # fmt: skip
        with open_trajectories(path, family=fam.dataset_family, obs_dim=fam.obs_dim, act_dim=fam.act_dim,
                               role=role) as f:  # fmt: skip
            by_task = f.by_task(tasks)
        out[role] = {t: TaskData.from_trajectories(by_task[t], task_id=t) for t in tasks}
    return out.get("train"), out.get("prompt")


def tail_prompts(sampler: SegmentSampler, tasks: Iterable[int], seed: int = 0) -> dict[int, Prompt]:
    """One prompt (P = 1) per task, in the sampler's units: the tail of a random trajectory of the task's
    prompt pool, drawn from the generator (seed, 7). The one definition of "the task's expert prompt":
    pre-training's rollouts, Prompt-DT, the tuners' starting prompts and Prompt Diffuser's condition."""
    rng = np.random.default_rng([seed, 7])
    return {t: sampler.sample(t, 1, rng)[0] for t in tasks}


def data_record(datamodule, family) -> dict | None:
    """Which data a run read: {"root": the dataset root, "files": {<path under root>: content digest}} for the
    files the data module names (`required_files()`, (role, quality) pairs) that exist; None for a data module
    that does not name its files. A result that records it can later be told apart from one made from other
    data (`promptdiff benchmark` reruns such a cell)."""
    from promptdiff.envs import get_family

    required = getattr(datamodule, "required_files", None)
    if required is None:
        return None
    root = str(getattr(datamodule, "hparams", {}).get("root", "datasets"))
    fam = get_family(family) if isinstance(family, str) else family
    paths = [dataset_path(fam.dataset_family, role, quality, root) for role, quality in required()]
    return {"root": root, "files": {p.relative_to(root).as_posix(): content_digest(p) for p in paths if p.is_file()}}
