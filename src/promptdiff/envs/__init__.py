"""Task families as registered gymnasium environments.

    import gymnasium as gym
    import promptdiff.envs
    env = gym.make("promptdiff/AntDir-v0", task=6)

`FAMILIES` / `get_family(name)` describe each family (task parameters, split, horizon, sizes,
return scale and target).
"""

import gymnasium as gym

from promptdiff.envs.families import FAMILIES, TaskFamily, get_family

_ENTRY_POINTS = {
    "promptdiff/CheetahDir-v0": ("promptdiff.envs.mujoco_tasks:HalfCheetahDirEnv", 200),
    "promptdiff/CheetahVel-v0": ("promptdiff.envs.mujoco_tasks:HalfCheetahVelEnv", 200),
    "promptdiff/AntDir-v0": ("promptdiff.envs.mujoco_tasks:AntDirEnv", 200),
    "promptdiff/ML1Reach-v0": ("promptdiff.envs.metaworld_ml1:ML1ReachEnv", 500),
    "promptdiff/ML1PickPlace-v0": ("promptdiff.envs.metaworld_ml1:ML1PickPlaceEnv", 500),
    "promptdiff/PointRobot-v0": ("promptdiff.envs.point_robot:PointRobotEnv", 20),
}

for _env_id, (_entry, _horizon) in _ENTRY_POINTS.items():
    if _env_id not in gym.registry:
        gym.register(id=_env_id, entry_point=_entry, max_episode_steps=_horizon)


def make_env(family: str | TaskFamily, task: int, **kwargs) -> gym.Env:
    """`gymnasium.make` for task `task` of a family (name or TaskFamily)."""
    fam = get_family(family) if isinstance(family, str) else family
    return gym.make(fam.env_id, task=task, **kwargs)


__all__ = ["FAMILIES", "TaskFamily", "get_family", "make_env"]
