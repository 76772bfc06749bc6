"""Task families as registered gymnasium environments.

    from promptdiff.envs import get_family, make_env
    env = make_env("ant_dir", 6)                       # or gymnasium.make("promptdiff/AntDir-v0", task=6)

`get_family(name)` returns a family's spec (`TaskFamily`: environment, task parameters, splits,
sizes, return scale and target, expert, collection defaults, quality bar); `register_family`
adds one, and plugins (`PROMPTDIFF_PLUGINS`) register their own. Environment ids are registered
with gymnasium by the registry, from the families' specs.
"""

import gymnasium as gym

from promptdiff.envs.families import (FAMILIES, QualityBar, TaskFamily, add_plugin, all_families, get_family,
                                      register_family)  # fmt: skip


def make_env(family: str | TaskFamily, task: int, **kwargs) -> gym.Env:
    """`gymnasium.make` for task `task` of a family (name or TaskFamily). Families whose tasks are given by
    parameters pass the parameter itself, so a task off the built-in grid needs no registry lookup."""
    fam = get_family(family)
    if fam.params is not None:
        kwargs.setdefault("task_param", fam.params[int(task)])
    return gym.make(fam.env_id, task=task, **kwargs)


__all__ = ["FAMILIES", "QualityBar", "TaskFamily", "add_plugin", "all_families", "get_family", "make_env",
           "register_family"]
