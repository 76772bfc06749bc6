"""The task families: one spec per family, in one registry.

A `TaskFamily` is plain data: everything every stage needs about a family lives on it.

- the environment: its gymnasium id, entry point ("module:Class") and horizon (the registration);
- the tasks, defined by their parameters (direction, target velocity, goal angle; Meta-World goals
  come from the benchmark), the train/test split and the held-out validation tasks;
- the sizes, the return-to-go scale and the target return G* of the decision transformer;
- the expert: "scripted" (a `scripted_policy` "module:Class" built with the family) or "learned"
  (a shipped PPO actor whose input is the observation plus `task_features(param)`; expert training
  draws tasks with `sample_task_param(rng)`); the collection defaults; the quality bar the expert
  data must meet; whether the env reports success.

Create task i with `promptdiff.envs.make_env(family, i)`. Families that share their tasks
(ant_dir and ant_dir_ood) share their data: `data_family` names the family whose files hold the
trajectories. `with_test_params` derives a family whose test tasks are new task parameters (for
example a cheetah_vel target velocity that is not on the grid), evaluated with the base family's PLM.

The registry (`register_family`, `get_family`, `all_families`) holds the built-in families and those
of plugins: modules named in the environment variable PROMPTDIFF_PLUGINS (module names or paths to
.py files, separated by commas), or exposed by installed packages under the entry-point group
`promptdiff.plugins`. A plugin registers its families when it is imported. Because the variable is
inherited, worker processes (collection, vector envs, benchmark cells) see the same families.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

ANT_DIR_ANGLES = (
    1.203, 0.427, 4.945, 4.124, 4.006, 3.617, 0.245, 2.248, 5.942, 0.377,
    5.429, 5.512, 0.322, 4.099, 3.467, 3.754, 3.038, 1.778, 1.871, 3.528,
    2.488, 4.956, 2.629, 0.904, 0.948, 0.347, 4.512, 1.837, 1.249, 5.224,
    3.569, 0.517, 3.424, 0.999, 4.252, 0.744, 2.796, 5.579, 5.009, 0.427,
    6.037, 4.142, 4.516, 4.672, 5.578, 0.842, 4.882, 5.265, 5.211, 0.183,
)  # fmt: skip

PLUGIN_VARIABLE = "PROMPTDIFF_PLUGINS"
PLUGIN_GROUP = "promptdiff.plugins"


@dataclass(frozen=True)
class QualityBar:
    """The bar a family's expert data must meet, over all its tasks (None: not checked)."""

    min_mean_return: float | None = None
    min_task_return: float | None = None
    min_mean_success: float | None = None
    min_task_success: float | None = None

    def __str__(self) -> str:
        parts = [f"mean return >= {self.min_mean_return:g}" if self.min_mean_return is not None else "",
                 f"every task >= {self.min_task_return:g}" if self.min_task_return is not None else "",
                 f"success rate >= {self.min_mean_success:g}" if self.min_mean_success is not None else "",
                 "every task's success rate >= " f"{self.min_task_success:g}" if self.min_task_success is not None
                 else ""]  # fmt: skip
        return " and ".join(p for p in parts if p) or "none"

    def met(self, returns: Mapping[int, float], success: Mapping[int, float | None]) -> bool:
        r = np.array(list(returns.values()), np.float64)
        s = np.array([np.nan if v is None else v for v in success.values()], np.float64)
        checks = [(self.min_mean_return, r.mean()), (self.min_task_return, r.min()),
                  (self.min_mean_success, s.mean()), (self.min_task_success, s.min())]  # fmt: skip
        return bool(all(bar is None or value >= bar for bar, value in checks))


@dataclass(frozen=True)
class TaskFamily:
    name: str
    env_id: str
    entry_point: str  # "module:Class" of the environment; constructed with task, task_param (and render_mode)
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
    plm_family: str | None = None  # family whose PLM (datasets/<plm_family>/plm.ckpt) the methods prompt
    has_success: bool = False
    metaworld_name: str | None = None
    params: tuple[tuple[float, ...], ...] | None = field(default=None, repr=False)
    scripted_policy: str | None = None  # "module:Class" of the scripted expert, constructed with the family
    task_features: Callable | None = field(default=None, repr=False)  # learned experts: param -> features
    sample_task_param: Callable | None = field(default=None, repr=False)  # learned experts: rng -> param
    collect_defaults: Mapping = field(default_factory=dict)  # CollectConfig fields that differ from its defaults
    quality_bar: QualityBar = field(default_factory=QualityBar)

    def __post_init__(self) -> None:
        if self.expert not in ("scripted", "learned"):
            raise ValueError(f"family {self.name}: expert must be 'scripted' or 'learned', got {self.expert!r}")
        if self.params is not None and len(self.params) != self.num_tasks:
            raise ValueError(f"family {self.name}: {len(self.params)} task parameters for num_tasks {self.num_tasks}")
        bad = sorted(t for t in (*self.test_tasks, *(self.train_tasks_override or ())) if not 0 <= t < self.num_tasks)
        if bad:
            raise ValueError(f"family {self.name}: tasks {bad} out of range [0, {self.num_tasks})")
        if ":" not in self.entry_point:
            raise ValueError(f"family {self.name}: entry_point must be 'module:Class', got {self.entry_point!r}")

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
        if self.params is not None:
            return np.asarray(self.params, dtype=np.float64)
        return _metaworld_goals(self).copy()

    def split_of(self, task: int) -> str:
        if task in self.test_tasks:
            return "test"
        if task in self.train_tasks:
            return "train"
        return "unused"

    @property
    def expert_name(self) -> str:
        """The family whose folder holds the learned expert's actor files: the PLM's family (a derived family's base)."""
        return self.plm_name

    @property
    def plm_name(self) -> str:
        """The family whose PLM this family's methods prompt."""
        return self.plm_family or self.name

    def collect_command(self, role: str | None = None, quality: str = "expert", root="datasets") -> str:
        """The command that writes this family's data files (one role and quality, or all)."""
        cmd = f"promptdiff collect --family {self.dataset_family}"
        if role is not None:
            cmd += f" --roles [{role}] --qualities [{quality}]"
        return cmd + ("" if str(root) == "datasets" else f" --root {root}")

    def with_test_params(self, name: str, params, description: str | None = None) -> "TaskFamily":
        """A family whose test tasks are new task parameters `params` (each a number or a sequence), appended
        after the built-in tasks, trained on the built-in training tasks, prompting this family's PLM. Its
        data (the new tasks' few-shot pools, collected with this family's expert) live under its own name."""
        if self.params is None:
            raise ValueError(f"{self.name}: tasks are not given by parameters (Meta-World goals come from the "
                             f"benchmark), so new test tasks cannot be defined by parameter")  # fmt: skip
        width = len(self.params[0])
        extra = tuple(tuple(float(x) for x in np.atleast_1d(p)) for p in params)
        if not extra or any(len(p) != width for p in extra):
            raise ValueError(f"{self.name}: give one or more task parameters of {width} number(s) each, got {params!r}")
        new = tuple(range(self.num_tasks, self.num_tasks + len(extra)))
        defaults = {**self.collect_defaults, "qualities": ["expert"]}  # the expert's few-shot pools of the new tasks
        return replace(self, name=name, num_tasks=self.num_tasks + len(extra), params=self.params + extra,
                       test_tasks=new, train_tasks_override=self.train_tasks, data_family=None,
                       plm_family=self.plm_name, quality_bar=QualityBar(), collect_defaults=defaults,
                       description=description or f"{self.description}; test tasks at parameters {list(extra)}")  # fmt: skip


_GOALS: dict[tuple, np.ndarray] = {}


def _metaworld_goals(fam: TaskFamily) -> np.ndarray:
    """(num_tasks, 3) goal positions of a Meta-World family (builds each task's env once per process)."""
    from promptdiff.envs import make_env

    key = (fam.env_id, fam.metaworld_name, fam.num_tasks)
    if key not in _GOALS:
        goals = []
        for task in range(fam.num_tasks):
            env = make_env(fam, task)
            goals.append(env.unwrapped.goal)
            env.close()
        _GOALS[key] = np.stack(goals)
    return _GOALS[key]


def task_parameter(family_name: str, task: int, task_param=None) -> np.ndarray:
    """The task's parameter: `task_param` when given (any value, e.g. off the built-in grid), else entry
    `task` of the named family's parameters."""
    if task_param is not None:
        return np.asarray(task_param, dtype=np.float64).reshape(-1)
    family = get_family(family_name)
    if not 0 <= int(task) < family.num_tasks:
        raise ValueError(f"{family_name}: task {task} out of range [0, {family.num_tasks})")
    return np.asarray(family.task_params[int(task)], dtype=np.float64)


# -- learned experts' task encodings (numpy only) -------------------------------------------------


def angle_features(param) -> np.ndarray:
    """(cos g, sin g) of a goal angle g."""
    g = float(np.asarray(param, np.float64).reshape(-1)[0])
    return np.array([np.cos(g), np.sin(g)])


def scalar_feature(param) -> np.ndarray:
    """The parameter itself (a direction or a target velocity)."""
    return np.asarray(param, np.float64).reshape(-1)[:1].copy()


def any_angle(rng: np.random.Generator) -> np.ndarray:
    return np.array([rng.uniform(0.0, 2 * np.pi)])


def any_cheetah_velocity(rng: np.random.Generator) -> np.ndarray:
    return np.array([rng.uniform(0.075, 3.0)])


def either_direction(rng: np.random.Generator) -> np.ndarray:
    return np.array([rng.choice([-1.0, 1.0])])


# -- the built-in families ------------------------------------------------------------------------

_CHEETAH = dict(horizon=200, obs_dim=20, act_dim=6, expert="learned", task_features=scalar_feature)
_ANT = dict(env_id="promptdiff/AntDir-v0", entry_point="promptdiff.envs.mujoco_tasks:AntDirEnv", num_tasks=50,
            horizon=200, obs_dim=27, act_dim=8, rtg_scale=500.0, target_return=500.0, expert="learned",
            params=tuple((a,) for a in ANT_DIR_ANGLES), task_features=angle_features, sample_task_param=any_angle)
_ML1 = dict(num_tasks=50, test_tasks=(11, 17, 25, 36, 41),
            horizon=500, obs_dim=39, act_dim=4, rtg_scale=1000.0, expert="scripted", has_success=True,
            scripted_policy="promptdiff.production.experts:MetaWorldExpert",
            collect_defaults={"episodes_per_task": 8, "action_noise": 0.1, "prompt_action_noise": 0.05},
            quality_bar=QualityBar(min_mean_success=0.95))  # fmt: skip

BUILTIN_FAMILIES = (
    TaskFamily(name="cheetah_dir", env_id="promptdiff/CheetahDir-v0",
               entry_point="promptdiff.envs.mujoco_tasks:HalfCheetahDirEnv", num_tasks=2, test_tasks=(0, 1),
               train_tasks_override=(0, 1),  # the literature trains and tests on both directions
               rtg_scale=1000.0, target_return=1500.0, params=((1.0,), (-1.0,)), sample_task_param=either_direction,
               description="half-cheetah runs forward (task 0) or backward (task 1)",
               collect_defaults={"episodes_per_task": 100}, quality_bar=QualityBar(min_task_return=900), **_CHEETAH),
    TaskFamily(name="cheetah_vel", env_id="promptdiff/CheetahVel-v0",
               entry_point="promptdiff.envs.mujoco_tasks:HalfCheetahVelEnv", num_tasks=40,
               test_tasks=(2, 7, 15, 23, 26), rtg_scale=500.0, target_return=0.0,
               params=tuple((0.075 * (i + 1),) for i in range(40)), sample_task_param=any_cheetah_velocity,
               description="half-cheetah runs at target velocity 0.075 (i + 1)",
               collect_defaults={"episodes_per_task": 20, "qualities": ["expert", "medium", "random"]},
               quality_bar=QualityBar(min_mean_return=-35, min_task_return=-70), **_CHEETAH),
    TaskFamily(name="ant_dir", test_tasks=(6, 17, 23, 30, 41),
               description="ant walks in the direction of one of 50 goal angles",
               collect_defaults={"episodes_per_task": 20}, quality_bar=QualityBar(min_mean_return=400, min_task_return=250),
               **_ANT),
    TaskFamily(name="ant_dir_ood", test_tasks=(1, 4, 41), train_tasks_override=(8, 13, 16, 20, 22, 26, 32, 37),
               description="ant_dir's tasks with an out-of-distribution split", data_family="ant_dir", **_ANT),
    TaskFamily(name="ml1_reach", env_id="promptdiff/ML1Reach-v0", target_return=5000.0, metaworld_name="reach-v3",
               entry_point="promptdiff.envs.metaworld_ml1:ML1ReachEnv",
               description="Meta-World reach-v3, 50 goal positions, goal hidden", **_ML1),
    TaskFamily(name="ml1_pick_place", env_id="promptdiff/ML1PickPlace-v0", target_return=4500.0,
               metaworld_name="pick-place-v3", entry_point="promptdiff.envs.metaworld_ml1:ML1PickPlaceEnv",
               description="Meta-World pick-place-v3, 50 object/goal layouts, goal hidden", **_ML1),
    TaskFamily(name="point_robot", env_id="promptdiff/PointRobot-v0",
               entry_point="promptdiff.envs.point_robot:PointRobotEnv", num_tasks=40, test_tasks=(3, 11, 19, 27, 35),
               horizon=20, obs_dim=2, act_dim=2, rtg_scale=10.0, target_return=0.0, expert="scripted",
               description="2-D point reaches a hidden goal on the upper unit half circle", has_success=True,
               params=tuple((math.pi * i / 39,) for i in range(40)),
               scripted_policy="promptdiff.production.experts:PointRobotExpert",
               collect_defaults={"episodes_per_task": 20, "action_noise": 0.2, "prompt_action_noise": 0.1},
               quality_bar=QualityBar(min_task_success=1.0)),
)  # fmt: skip


# -- the registry ---------------------------------------------------------------------------------

FAMILIES: dict[str, TaskFamily] = {}
_plugins_loaded: set[str] = set()


def register_family(family: TaskFamily, replace_existing: bool = False) -> TaskFamily:
    """Add a family to the registry and register its environment id with gymnasium (once per id)."""
    import gymnasium as gym

    if family.name in FAMILIES and FAMILIES[family.name] != family and not replace_existing:
        raise ValueError(f"a different family named {family.name!r} is already registered")
    spec = gym.registry.get(family.env_id)
    if spec is None:
        gym.register(id=family.env_id, entry_point=family.entry_point, max_episode_steps=family.horizon)
    elif spec.max_episode_steps != family.horizon or spec.entry_point != family.entry_point:
        raise ValueError(f"family {family.name}: env id {family.env_id} is registered with entry point "
                         f"{spec.entry_point} and horizon {spec.max_episode_steps}, not {family.entry_point} and "
                         f"{family.horizon}")  # fmt: skip
    FAMILIES[family.name] = family
    return family


def load_plugins() -> None:
    """Import the plugins named in PROMPTDIFF_PLUGINS and the `promptdiff.plugins` entry points (once each)."""
    from importlib.metadata import entry_points

    names = [n.strip() for n in os.environ.get(PLUGIN_VARIABLE, "").split(",") if n.strip()]
    for name in names:
        if name in _plugins_loaded:
            continue
        _plugins_loaded.add(name)
        try:
            if name.endswith(".py"):
                path = Path(name).resolve()
                module_name = f"promptdiff_plugin_{path.stem}"
                if module_name not in sys.modules:
                    spec = importlib.util.spec_from_file_location(module_name, path)
                    if spec is None or not path.is_file():
                        raise FileNotFoundError(f"plugin file {name} not found")
                    module = importlib.util.module_from_spec(spec)
                    sys.modules[module_name] = module
                    spec.loader.exec_module(module)
            else:
                importlib.import_module(name)
        except Exception as err:
            _plugins_loaded.discard(name)
            raise ImportError(f"plugin {name!r} (from {PLUGIN_VARIABLE}) could not be loaded: {err}") from err
    for ep in entry_points(group=PLUGIN_GROUP):
        key = f"entry-point:{ep.value}"
        if key not in _plugins_loaded:
            _plugins_loaded.add(key)
            ep.load()


def add_plugin(name: str) -> None:
    """Name a plugin for this process and its children (appended to PROMPTDIFF_PLUGINS), and load it."""
    current = [n for n in os.environ.get(PLUGIN_VARIABLE, "").split(",") if n.strip()]
    entry = str(Path(name).resolve()) if name.endswith(".py") else name
    if entry not in current:
        os.environ[PLUGIN_VARIABLE] = ",".join([*current, entry])
    load_plugins()


def all_families() -> dict[str, TaskFamily]:
    """Every registered family (built-in and plugins'), by name."""
    load_plugins()
    return dict(FAMILIES)


def get_family(name: str | TaskFamily) -> TaskFamily:
    """The family of that name (a TaskFamily passes through)."""
    if isinstance(name, TaskFamily):
        return name
    if name not in FAMILIES:
        load_plugins()
    try:
        return FAMILIES[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(str(name), list(FAMILIES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise KeyError(
            f"unknown task family {name!r}{hint} Known families: {', '.join(sorted(FAMILIES))} (a family of your "
            f"own: name its module in {PLUGIN_VARIABLE} or with `promptdiff --plugin MODULE ...`)"
        ) from None


for _family in BUILTIN_FAMILIES:
    register_family(_family)
