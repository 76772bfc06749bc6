"""The task families: what each one is, how it splits, and the constants every later stage uses.

A `TaskFamily` is plain data. It names the gymnasium id of its environment (create task i with
`gymnasium.make(family.env_id, task=i)`), its task parameters, the train/test split, the
horizon, observation and action sizes, and the return-to-go scale and target return used by
the decision transformer. Families that share their tasks (ant_dir and ant_dir_ood) share their
data too: `data_family` names the family whose files hold the trajectories.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

ANT_DIR_ANGLES = (
    1.203, 0.427, 4.945, 4.124, 4.006, 3.617, 0.245, 2.248, 5.942, 0.377,
    5.429, 5.512, 0.322, 4.099, 3.467, 3.754, 3.038, 1.778, 1.871, 3.528,
    2.488, 4.956, 2.629, 0.904, 0.948, 0.347, 4.512, 1.837, 1.249, 5.224,
    3.569, 0.517, 3.424, 0.999, 4.252, 0.744, 2.796, 5.579, 5.009, 0.427,
    6.037, 4.142, 4.516, 4.672, 5.578, 0.842, 4.882, 5.265, 5.211, 0.183,
)  # fmt: skip


@dataclass(frozen=True)
class TaskFamily:
    name: str
    env_id: str
    num_tasks: int
    test_tasks: tuple[int, ...]
    horizon: int
    obs_dim: int
    act_dim: int
    rtg_scale: float
    target_return: float  # G*: the return-to-go a rollout starts from (Meta-World: set from data)
    expert: str  # "scripted" or "learned"
    description: str
    train_tasks_override: tuple[int, ...] | None = None
    data_family: str | None = None  # family whose datasets hold the trajectories
    has_success: bool = False
    metaworld_name: str | None = None
    _params: tuple[tuple[float, ...], ...] | None = field(default=None, repr=False)

    @property
    def train_tasks(self) -> tuple[int, ...]:
        if self.train_tasks_override is not None:
            return self.train_tasks_override
        return tuple(i for i in range(self.num_tasks) if i not in self.test_tasks)

    @property
    def _held_out(self) -> tuple[int, ...]:
        """Training tasks that are not also test tasks (where validation tasks may come from)."""
        return tuple(t for t in self.train_tasks if t not in self.test_tasks)

    @property
    def val_tasks(self) -> tuple[int, ...]:
        """Held-out validation tasks for choosing prompt-tuning hyper-parameters without touching the test
        tasks: as many training tasks as there are test tasks, evenly spread over the training tasks that
        are not also test tasks (the centres of equal bins). They are in the PLM's pre-training data, so
        they validate the tuning procedure, not generalisation. Empty when every training task is a test
        task (cheetah_dir)."""
        held = self._held_out
        n = min(len(self.test_tasks), len(held))
        return tuple(held[(2 * i + 1) * len(held) // (2 * n)] for i in range(n))

    def split_tasks(self, split: str, tasks=None) -> list[int]:
        """The tasks of `split` ("test", "val" or "train"), narrowed to `tasks` when given. For "val", `tasks`
        may name any training task that is not a test task (default: `val_tasks`)."""
        if split == "test":
            pool, default = self.test_tasks, self.test_tasks
        elif split == "val":
            pool, default = self._held_out, self.val_tasks
            if not pool:
                raise ValueError(f"{self.name} has no training task outside its test tasks {self.test_tasks}: "
                                 f"split 'val' is impossible on this family")  # fmt: skip
        elif split == "train":
            pool, default = self.train_tasks, self.train_tasks
        else:
            raise ValueError(f"split must be 'test', 'val' or 'train', got {split!r}")
        chosen = list(default if tasks is None else (int(t) for t in tasks))
        unknown = sorted(set(chosen) - set(pool))
        if unknown:
            raise ValueError(f"tasks {unknown} are not {split} tasks of {self.name} ({list(pool)})")
        return chosen

    @property
    def dataset_family(self) -> str:
        return self.data_family or self.name

    @property
    def task_params(self) -> np.ndarray:
        """(num_tasks, P) task parameters: direction, target velocity, goal angle or goal xyz."""
        if self._params is not None:
            return np.asarray(self._params, dtype=np.float64)
        return _metaworld_goals(self.name).copy()

    def split_of(self, task: int) -> str:
        if task in self.test_tasks:
            return "test"
        if task in self.train_tasks:
            return "train"
        return "unused"


@functools.lru_cache(maxsize=None)
def _metaworld_goals(name: str) -> np.ndarray:
    """(num_tasks, 3) goal positions of a Meta-World family (builds each task's env once)."""
    from promptdiff.envs import make_env

    goals = []
    for task in range(FAMILIES[name].num_tasks):
        env = make_env(name, task)
        goals.append(env.unwrapped.goal)
        env.close()
    return np.stack(goals)


def _family(**kwargs) -> TaskFamily:
    return TaskFamily(**kwargs)


FAMILIES: dict[str, TaskFamily] = {
    f.name: f
    for f in [
        _family(
            name="cheetah_dir",
            env_id="promptdiff/CheetahDir-v0",
            num_tasks=2,
            test_tasks=(0, 1),
            train_tasks_override=(0, 1),  # the literature trains and tests on both directions
            horizon=200,
            obs_dim=20,
            act_dim=6,
            rtg_scale=1000.0,
            target_return=1500.0,
            expert="learned",
            description="half-cheetah runs forward (task 0) or backward (task 1)",
            _params=((1.0,), (-1.0,)),
        ),
        _family(
            name="cheetah_vel",
            env_id="promptdiff/CheetahVel-v0",
            num_tasks=40,
            test_tasks=(2, 7, 15, 23, 26),
            horizon=200,
            obs_dim=20,
            act_dim=6,
            rtg_scale=500.0,
            target_return=0.0,
            expert="learned",
            description="half-cheetah runs at target velocity 0.075 (i + 1)",
            _params=tuple((0.075 * (i + 1),) for i in range(40)),
        ),
        _family(
            name="ant_dir",
            env_id="promptdiff/AntDir-v0",
            num_tasks=50,
            test_tasks=(6, 17, 23, 30, 41),
            horizon=200,
            obs_dim=27,
            act_dim=8,
            rtg_scale=500.0,
            target_return=500.0,
            expert="learned",
            description="ant walks in the direction of one of 50 goal angles",
            _params=tuple((a,) for a in ANT_DIR_ANGLES),
        ),
        _family(
            name="ant_dir_ood",
            env_id="promptdiff/AntDir-v0",
            num_tasks=50,
            test_tasks=(1, 4, 41),
            train_tasks_override=(8, 13, 16, 20, 22, 26, 32, 37),
            horizon=200,
            obs_dim=27,
            act_dim=8,
            rtg_scale=500.0,
            target_return=500.0,
            expert="learned",
            description="ant_dir's tasks with an out-of-distribution split",
            data_family="ant_dir",
            _params=tuple((a,) for a in ANT_DIR_ANGLES),
        ),
        _family(
            name="ml1_reach",
            env_id="promptdiff/ML1Reach-v0",
            num_tasks=50,
            test_tasks=(11, 17, 25, 36, 41),
            horizon=500,
            obs_dim=39,
            act_dim=4,
            rtg_scale=1000.0,
            target_return=5000.0,
            expert="scripted",
            description="Meta-World reach-v3, 50 goal positions, goal hidden",
            has_success=True,
            metaworld_name="reach-v3",
        ),
        _family(
            name="ml1_pick_place",
            env_id="promptdiff/ML1PickPlace-v0",
            num_tasks=50,
            test_tasks=(11, 17, 25, 36, 41),
            horizon=500,
            obs_dim=39,
            act_dim=4,
            rtg_scale=1000.0,
            target_return=4500.0,
            expert="scripted",
            description="Meta-World pick-place-v3, 50 object/goal layouts, goal hidden",
            has_success=True,
            metaworld_name="pick-place-v3",
        ),
        _family(
            name="point_robot",
            env_id="promptdiff/PointRobot-v0",
            num_tasks=40,
            test_tasks=(3, 11, 19, 27, 35),
            horizon=20,
            obs_dim=2,
            act_dim=2,
            rtg_scale=10.0,
            target_return=0.0,
            expert="scripted",
            description="2-D point reaches a hidden goal on the upper unit half circle",
            has_success=True,
            _params=tuple((math.pi * i / 39,) for i in range(40)),
        ),
    ]
}


def get_family(name: str) -> TaskFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(
            f"unknown task family {name!r}; known families: {', '.join(sorted(FAMILIES))}"
        ) from None
