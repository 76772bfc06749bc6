"""Point robot: a 2-D point that must reach a hidden goal on the upper half of the unit circle.

The agent starts at the origin, observes only its own position (2,), moves by an action in
[-0.1, 0.1]^2 per step and receives minus its Euclidean distance to the goal after the move.
The goal is not in the observation: the task is identifiable only from rewards or a prompt.
Episodes never terminate early; the registered horizon truncates them.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from promptdiff.envs.families import task_parameter

MAX_STEP = 0.1
SUCCESS_RADIUS = 0.05


class PointRobotEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, task: int = 0, task_param=None, render_mode: str | None = None):
        self.task = int(task)
        self.task_param = task_parameter("point_robot", self.task, task_param)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float64)
        self.action_space = spaces.Box(-MAX_STEP, MAX_STEP, shape=(2,), dtype=np.float32)
        self.render_mode = render_mode
        self._pos = np.zeros(2)

    @property
    def goal(self) -> np.ndarray:
        angle = float(self.task_param[0])
        return np.array([np.cos(angle), np.sin(angle)])

    def set_task_param(self, param) -> None:
        self.task_param = np.asarray(param, dtype=np.float64).reshape(1)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._pos = np.zeros(2)
        return self._pos.copy(), {}

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float64), -MAX_STEP, MAX_STEP)
        self._pos = self._pos + action
        distance = float(np.linalg.norm(self._pos - self.goal))
        info = {"distance": distance, "success": distance <= SUCCESS_RADIUS}
        return self._pos.copy(), -distance, False, False, info


def point_robot_expert(observation: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """Analytic expert: step straight at the goal, as far as the action box allows."""
    delta = np.asarray(goal, dtype=np.float64) - np.asarray(observation, dtype=np.float64)[..., :2]
    # Largest step along delta that stays inside the box [-0.1, 0.1]^2, never overshooting.
    largest = np.max(np.abs(delta), axis=-1, keepdims=True)
    scale = np.minimum(1.0, MAX_STEP / np.maximum(largest, 1e-12))
    return (delta * scale).astype(np.float32)
