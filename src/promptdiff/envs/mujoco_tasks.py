"""MuJoCo task families: Cheetah-dir, Cheetah-vel and Ant-dir on gymnasium's models (mujoco 3).

Observation layouts, rewards and terminations follow the meta-RL literature (Prompt-DT, MACAW,
rand_param_envs) so that data and scores are comparable:

* half-cheetah, obs (20,) = qpos[1:] (8), qvel (9), torso position xyz (3); never terminates.
  cheetah_dir reward: dir * v_x - 0.05 |a|^2;  cheetah_vel reward: -|v_x - v*| - 0.05 |a|^2.
* ant, obs (27,) = qpos[2:] (13), qvel (14); terminates when torso z leaves [0.2, 1.0] or the
  state is not finite.  reward: <v_xy, (cos g, sin g)> - 0.5 |a|^2
  - 0.5e-3 sum(clip(cfrc_ext, -1, 1)^2) + 1.

Velocities are finite differences over one control step (frame_skip 5, dt 0.05). Each env holds
one task parameter (direction, target velocity or goal angle): `task_param`, or entry `task` of
its family's parameters. `set_task_param` may change it between episodes; expert training uses
that to draw a fresh task every episode.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

from promptdiff.envs.families import task_parameter


_CAMERA = {"distance": 4.0, "trackbodyid": 1}


class _TaskMujocoEnv(MujocoEnv):
    """Shared plumbing: model loading, reset noise, the task parameter."""

    metadata = {"render_modes": ["human", "rgb_array", "depth_array"], "render_fps": 20}
    family_name: str = ""
    xml_file: str = ""
    obs_dim: int = 0

    def __init__(self, task: int = 0, task_param=None, render_mode: str | None = None, **mujoco_kwargs):
        self.task = int(task)
        self.task_param = task_parameter(self.family_name, self.task, task_param)
        obs_space = spaces.Box(-np.inf, np.inf, shape=(self.obs_dim,), dtype=np.float64)
        MujocoEnv.__init__(
            self,
            self.xml_file,
            frame_skip=5,
            observation_space=obs_space,
            render_mode=render_mode,
            default_camera_config=_CAMERA,
            **mujoco_kwargs,
        )

    def set_task_param(self, param) -> None:
        """Replace the task parameter (takes effect immediately; call before reset)."""
        self.task_param = np.asarray(param, dtype=np.float64).reshape(np.shape(self.task_param))

    def reset_model(self):
        qpos = self.init_qpos + self.np_random.uniform(-0.1, 0.1, size=self.model.nq)
        qvel = self.init_qvel + 0.1 * self.np_random.standard_normal(self.model.nv)
        self.set_state(qpos, qvel)
        return self._get_obs()


class HalfCheetahTaskEnv(_TaskMujocoEnv):
    xml_file = "half_cheetah.xml"
    obs_dim = 20

    def _get_obs(self):
        return np.concatenate(
            [self.data.qpos[1:], self.data.qvel, self.get_body_com("torso")]
        ).astype(np.float64)

    def _task_reward(self, v_x: float) -> float:
        raise NotImplementedError

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        x_before = float(self.data.qpos[0])
        self.do_simulation(action, self.frame_skip)
        v_x = (float(self.data.qpos[0]) - x_before) / self.dt
        ctrl_cost = 0.05 * float(np.sum(np.square(action)))
        task_reward = self._task_reward(v_x)
        reward = task_reward - ctrl_cost
        info = {"x_velocity": v_x, "reward_task": task_reward, "reward_ctrl": -ctrl_cost}
        if self.render_mode == "human":
            self.render()
        return self._get_obs(), reward, False, False, info


class HalfCheetahDirEnv(HalfCheetahTaskEnv):
    """Run forward (task 0, direction +1) or backward (task 1, direction -1)."""

    family_name = "cheetah_dir"

    def _task_reward(self, v_x: float) -> float:
        return float(self.task_param[0]) * v_x


class HalfCheetahVelEnv(HalfCheetahTaskEnv):
    """Run forward at target velocity v* = 0.075 (i + 1)."""

    family_name = "cheetah_vel"

    def _task_reward(self, v_x: float) -> float:
        return -abs(v_x - float(self.task_param[0]))


class AntDirEnv(_TaskMujocoEnv):
    """Walk in the direction of a goal angle g (radians) in the x-y plane."""

    family_name = "ant_dir"
    xml_file = "ant.xml"
    obs_dim = 27

    def _get_obs(self):
        return np.concatenate([self.data.qpos[2:], self.data.qvel]).astype(np.float64)

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        xy_before = self.get_body_com("torso")[:2].copy()
        self.do_simulation(action, self.frame_skip)
        v_xy = (self.get_body_com("torso")[:2] - xy_before) / self.dt
        goal = float(self.task_param[0])
        forward = float(v_xy @ np.array([np.cos(goal), np.sin(goal)]))
        ctrl_cost = 0.5 * float(np.sum(np.square(action)))
        contact_cost = 0.5e-3 * float(np.sum(np.square(np.clip(self.data.cfrc_ext, -1.0, 1.0))))
        reward = forward - ctrl_cost - contact_cost + 1.0
        state = self.state_vector()
        healthy = bool(np.isfinite(state).all() and 0.2 <= state[2] <= 1.0)
        info = {
            "reward_forward": forward,
            "reward_ctrl": -ctrl_cost,
            "reward_contact": -contact_cost,
            "x_velocity": float(v_xy[0]),
            "y_velocity": float(v_xy[1]),
        }
        if self.render_mode == "human":
            self.render()
        return self._get_obs(), reward, not healthy, False, info
