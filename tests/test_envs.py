"""Task-family environments against the project's specification.

Each test recomputes what the specification says (splits, parameters, observation layout,
reward, termination, truncation) independently of the environment code and compares.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import promptdiff.envs  # noqa: F401  (registers the gymnasium ids)
from promptdiff.envs import FAMILIES, get_family, make_env
from promptdiff.envs import families as families_module
from promptdiff.envs.point_robot import point_robot_expert

DT = 0.05  # frame_skip 5 x timestep 0.01

# family -> (num_tasks, test tasks, train tasks or None for "all others", obs, act, horizon,
#            target return G*, rtg scale; None where the spec gives none)
SPEC = {
    "cheetah_dir": (2, (0, 1), (0, 1), 20, 6, 200, 1500.0, 1000.0),
    "cheetah_vel": (40, (2, 7, 15, 23, 26), None, 20, 6, 200, 0.0, 500.0),
    "ant_dir": (50, (6, 17, 23, 30, 41), None, 27, 8, 200, 500.0, 500.0),
    "ant_dir_ood": (50, (1, 4, 41), (8, 13, 16, 20, 22, 26, 32, 37), 27, 8, 200, 500.0, 500.0),
    "ml1_reach": (50, (11, 17, 25, 36, 41), None, 39, 4, 500, None, None),
    "ml1_pick_place": (50, (11, 17, 25, 36, 41), None, 39, 4, 500, None, None),
    "point_robot": (40, (3, 11, 19, 27, 35), None, 2, 2, 20, 0.0, 10.0),
}
ENV_IDS = {
    "cheetah_dir": "promptdiff/CheetahDir-v0",
    "cheetah_vel": "promptdiff/CheetahVel-v0",
    "ant_dir": "promptdiff/AntDir-v0",
    "ant_dir_ood": "promptdiff/AntDir-v0",
    "ml1_reach": "promptdiff/ML1Reach-v0",
    "ml1_pick_place": "promptdiff/ML1PickPlace-v0",
    "point_robot": "promptdiff/PointRobot-v0",
}
MUJOCO_FAMILIES = ["cheetah_dir", "cheetah_vel", "ant_dir"]
METAWORLD = {"ml1_reach": "reach-v3", "ml1_pick_place": "pick-place-v3"}


def _make(family: str, task: int, **kwargs) -> gym.Env:
    return gym.make(ENV_IDS[family], task=task, **kwargs)


# --------------------------------------------------------------------------- registry, splits


def test_every_family_is_described():
    assert set(FAMILIES) == set(SPEC)


@pytest.mark.parametrize("family", sorted(SPEC))
def test_family_split_and_constants(family):
    num, test, train, obs_dim, act_dim, horizon, target, scale = SPEC[family]
    fam = get_family(family)
    assert fam.name == family
    assert fam.env_id == ENV_IDS[family]
    assert fam.num_tasks == num
    assert tuple(fam.test_tasks) == test
    expected_train = train if train is not None else tuple(i for i in range(num) if i not in test)
    assert tuple(fam.train_tasks) == expected_train
    assert (fam.obs_dim, fam.act_dim, fam.horizon) == (obs_dim, act_dim, horizon)
    if target is not None:
        assert fam.target_return == target
        assert fam.rtg_scale == scale
    for t in test:
        assert fam.split_of(t) == "test"
    if train is None:  # disjoint splits covering every task
        assert set(fam.train_tasks).isdisjoint(fam.test_tasks)
        assert set(fam.train_tasks) | set(fam.test_tasks) == set(range(num))


def test_get_family_unknown_name():
    with pytest.raises(KeyError, match="unknown task family"):
        get_family("no_such_family")


@pytest.mark.parametrize("family", sorted(SPEC))
@pytest.mark.parametrize("which", ["first", "last"])
def test_registered_and_creatable(family, which):
    num, _, _, obs_dim, act_dim, horizon, _, _ = SPEC[family]
    task = 0 if which == "first" else num - 1
    assert ENV_IDS[family] in gym.registry
    env = make_env(family, task)
    try:
        assert env.spec.id == ENV_IDS[family]
        assert env.spec.max_episode_steps == horizon
        assert env.unwrapped.task == task
        assert env.observation_space.shape == (obs_dim,)
        assert env.action_space.shape == (act_dim,)
        obs, _ = env.reset(seed=0)
        assert obs.shape == (obs_dim,)
        assert env.observation_space.contains(obs)
    finally:
        env.close()


@pytest.mark.parametrize("family", ["cheetah_dir", "ant_dir", "point_robot", "ml1_reach"])
def test_task_out_of_range_rejected(family):
    num = SPEC[family][0]
    for bad in (-1, num):
        with pytest.raises(ValueError):
            _make(family, bad)


@pytest.mark.parametrize(
    "family", ["cheetah_dir", "cheetah_vel", "ant_dir", "point_robot", "ml1_reach"]
)
def test_check_env(family):
    env = _make(family, 1)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env.unwrapped, skip_render_check=True)
        # Unbounded observation boxes are intended; anything else check_env warns about is not.
        others = [str(w.message) for w in caught if "infinit" not in str(w.message).lower()]
        assert not others, others
    finally:
        env.close()


# --------------------------------------------------------------------------- task parameters


def test_cheetah_dir_params():
    fam = get_family("cheetah_dir")
    np.testing.assert_array_equal(fam.task_params[:, 0], [1.0, -1.0])
    for task, direction in [(0, 1.0), (1, -1.0)]:
        assert float(_make("cheetah_dir", task).unwrapped.task_param[0]) == direction


def test_cheetah_vel_params():
    fam = get_family("cheetah_vel")
    expected = 0.075 * (np.arange(40) + 1)
    np.testing.assert_allclose(fam.task_params[:, 0], expected)
    for task in (0, 26, 39):
        param = _make("cheetah_vel", task).unwrapped.task_param
        np.testing.assert_allclose(param[0], expected[task])


@pytest.mark.parametrize("family", ["ant_dir", "ant_dir_ood"])
def test_ant_angles(family):
    angles = get_family(family).task_params[:, 0]
    assert angles.shape == (50,)
    np.testing.assert_allclose(angles[:3], [1.203, 0.427, 4.945])
    np.testing.assert_allclose(angles[-1], 0.183)
    assert np.all((angles >= 0) & (angles < 2 * np.pi))
    np.testing.assert_array_equal(angles, get_family("ant_dir").task_params[:, 0])
    for task in (0, 49):
        np.testing.assert_allclose(_make(family, task).unwrapped.task_param[0], angles[task])


def test_point_robot_goals():
    angles = get_family("point_robot").task_params[:, 0]
    np.testing.assert_allclose(angles, np.pi * np.arange(40) / 39)
    for task in (0, 3, 20, 39):
        goal = _make("point_robot", task).unwrapped.goal
        a = math.pi * task / 39
        np.testing.assert_allclose(goal, [math.cos(a), math.sin(a)], atol=1e-12)
        np.testing.assert_allclose(np.linalg.norm(goal), 1.0)
        assert goal[1] >= -1e-12  # upper half circle


# --------------------------------------------------------------------------- MuJoCo families


def _expected_mujoco_obs(family: str, data) -> np.ndarray:
    if family.startswith("cheetah"):
        return np.concatenate([data.qpos[1:], data.qvel, data.body("torso").xpos])
    return np.concatenate([data.qpos[2:], data.qvel])


@pytest.mark.parametrize("family", MUJOCO_FAMILIES)
def test_mujoco_timing(family):
    u = _make(family, 0).unwrapped
    assert u.frame_skip == 5
    assert u.dt == pytest.approx(DT)


@pytest.mark.parametrize("family", MUJOCO_FAMILIES)
def test_mujoco_obs_layout(family):
    env = _make(family, 0)
    u = env.unwrapped
    nq, nv = (9, 9) if family.startswith("cheetah") else (15, 14)
    assert (u.model.nq, u.model.nv) == (nq, nv)
    obs, _ = env.reset(seed=3)
    np.testing.assert_allclose(obs, _expected_mujoco_obs(family, u.data))
    for _ in range(5):
        obs, *_ = env.step(env.action_space.sample())
        assert obs.dtype == np.float64
        np.testing.assert_allclose(obs, _expected_mujoco_obs(family, u.data))
        if family.startswith("cheetah"):
            np.testing.assert_allclose(obs[17:], u.get_body_com("torso"))


def _expected_reward(family: str, task: int, u, before: dict, action: np.ndarray) -> float:
    action = np.asarray(action, dtype=np.float64)
    if family == "cheetah_dir":
        v_x = (u.data.qpos[0] - before["qpos"][0]) / DT
        return (1.0 if task == 0 else -1.0) * v_x - 0.05 * np.sum(action**2)
    if family == "cheetah_vel":
        v_x = (u.data.qpos[0] - before["qpos"][0]) / DT
        return -abs(v_x - 0.075 * (task + 1)) - 0.05 * np.sum(action**2)
    goal = get_family("ant_dir").task_params[task, 0]
    v_xy = (u.data.body("torso").xpos[:2] - before["torso_xy"]) / DT
    contact = 0.5e-3 * np.sum(np.clip(u.data.cfrc_ext, -1.0, 1.0) ** 2)
    return v_xy @ [math.cos(goal), math.sin(goal)] - 0.5 * np.sum(action**2) - contact + 1.0


@pytest.mark.parametrize(
    "family,task",
    [("cheetah_dir", 0), ("cheetah_dir", 1), ("cheetah_vel", 0), ("cheetah_vel", 26),
     ("ant_dir", 0), ("ant_dir", 41)],
)  # fmt: skip
def test_mujoco_reward(family, task):
    env = _make(family, task)
    u = env.unwrapped
    env.reset(seed=task)
    env.action_space.seed(task)
    contact_seen = False
    for _ in range(25):
        before = {"qpos": u.data.qpos.copy(), "torso_xy": u.data.body("torso").xpos[:2].copy()}
        action = env.action_space.sample()
        _, reward, terminated, truncated, _ = env.step(action)
        np.testing.assert_allclose(
            reward, _expected_reward(family, task, u, before, action), rtol=1e-9, atol=1e-9
        )
        contact_seen |= bool(np.any(u.data.cfrc_ext != 0))
        if terminated or truncated:
            break
    if family == "ant_dir":
        assert contact_seen  # the contact term was actually exercised


@pytest.mark.parametrize("family", ["cheetah_dir", "cheetah_vel"])
def test_cheetah_never_terminates_truncates_at_200(family):
    env = _make(family, 1)
    env.reset(seed=0)
    env.action_space.seed(0)
    for t in range(1, 201):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        assert not terminated
        assert truncated == (t == 200)


def _ant_step_from_height(z: float, contacts: bool = True):
    env = _make("ant_dir", 0)
    u = env.unwrapped
    if not contacts:  # a free fall keeps the torso where it was put (drop ~1 cm per step)
        u.model.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_CONTACT
    env.reset(seed=0)
    qpos, qvel = u.init_qpos.copy(), np.zeros(u.model.nv)
    qpos[2] = z
    u.set_state(qpos, qvel)
    _, _, terminated, truncated, _ = env.step(np.zeros(8))
    return terminated, truncated, float(u.data.qpos[2])


@pytest.mark.parametrize(
    "z,unhealthy",
    [(0.1, True), (0.16, True), (0.21, False), (0.6, False), (0.95, False), (1.0, True),
     (1.2, True)],
)  # fmt: skip
def test_ant_termination(z, unhealthy):
    # Contacts off: from z = 0.1 the floor would otherwise push the torso back above 0.2 within
    # one step (the env, like the literature, judges health on the post-step state). Without
    # contacts the torso ends the step ~2 cm above where it was put (the legs settle into their
    # joint limits), so each z above lands clearly on its side of [0.2, 1.0].
    terminated, truncated, z_after = _ant_step_from_height(z, contacts=False)
    assert abs(z_after - z) < 0.03
    assert terminated == unhealthy
    assert terminated == (not 0.2 <= z_after <= 1.0)
    assert not truncated


def test_ant_termination_with_contacts_follows_post_step_height():
    for z in (0.1, 1.2, 0.55):
        terminated, _, z_after = _ant_step_from_height(z)
        assert terminated == (not 0.2 <= z_after <= 1.0)
    assert _ant_step_from_height(1.2)[0]


def test_ant_healthy_episode_runs_to_horizon_when_standing_still():
    env = _make("ant_dir", 0)
    env.reset(seed=0)
    for t in range(1, 201):
        _, _, terminated, truncated, _ = env.step(np.zeros(8))
        assert not terminated
        assert truncated == (t == 200)


# --------------------------------------------------------------------------- point robot


def test_point_robot_reward_and_clipping():
    env = _make("point_robot", 3)
    goal = env.unwrapped.goal
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [0.0, 0.0])
    obs, reward, terminated, truncated, info = env.step(np.array([0.5, -0.5], dtype=np.float32))
    np.testing.assert_allclose(obs, [0.1, -0.1])  # clipped to [-0.1, 0.1]
    np.testing.assert_allclose(reward, -np.linalg.norm(obs - goal))
    np.testing.assert_allclose(info["distance"], -reward)
    assert not terminated and not truncated
    obs2, reward2, *_ = env.step(np.array([0.03, 0.07], dtype=np.float32))  # inside the box
    np.testing.assert_allclose(obs2, obs + [0.03, 0.07], atol=1e-7)
    np.testing.assert_allclose(reward2, -np.linalg.norm(obs2 - goal))


def test_point_robot_truncates_at_20():
    env = _make("point_robot", 0)
    env.reset(seed=0)
    env.action_space.seed(0)
    pos = np.zeros(2)
    for t in range(1, 21):
        action = env.action_space.sample()
        obs, reward, terminated, truncated, _ = env.step(action)
        pos = pos + np.clip(action.astype(np.float64), -0.1, 0.1)
        np.testing.assert_allclose(obs, pos, atol=1e-12)
        np.testing.assert_allclose(reward, -np.linalg.norm(pos - env.unwrapped.goal))
        assert not terminated
        assert truncated == (t == 20)


@pytest.mark.parametrize("task", range(40))
def test_point_robot_expert_reaches_goal(task):
    env = _make("point_robot", task)
    goal = env.unwrapped.goal
    obs, _ = env.reset(seed=task)
    truncated = False
    while not truncated:
        action = point_robot_expert(obs, goal)
        assert np.all(np.abs(action) <= 0.1 + 1e-7)
        obs, reward, terminated, truncated, info = env.step(action)
        assert not terminated
    assert np.linalg.norm(obs - goal) < 1e-6
    assert -reward < 1e-6 and info["success"]


# --------------------------------------------------------------------------- Meta-World

ML1_CASES = [("ml1_reach", 11), ("ml1_pick_place", 41)]


@pytest.fixture(scope="module")
def ml1_reference():
    """Meta-World's own ML1 benchmarks, built here independently of promptdiff."""
    import metaworld

    return {family: metaworld.ML1(name, seed=1) for family, name in METAWORLD.items()}


def _raw_metaworld(ml1_reference, family: str, task: int):
    bench = ml1_reference[family]
    env = bench.train_classes[METAWORLD[family]]()
    env.set_task(bench.train_tasks[task])
    return env


@pytest.mark.parametrize("family", sorted(METAWORLD))
def test_ml1_has_50_train_tasks(ml1_reference, family):
    assert len(ml1_reference[family].train_tasks) == get_family(family).num_tasks == 50


@pytest.mark.parametrize("family,task", ML1_CASES)
def test_ml1_task_pinned_to_train_task(ml1_reference, family, task):
    raw = _raw_metaworld(ml1_reference, family, task)
    raw.reset()
    env = _make(family, task)
    obs_a, _ = env.reset(seed=0)
    np.testing.assert_allclose(env.unwrapped.goal, raw._target_pos)
    obs_b, _ = env.reset(seed=123)  # same layout in every episode
    np.testing.assert_allclose(obs_a, obs_b)
    np.testing.assert_allclose(env.unwrapped.goal, raw._target_pos)
    other = _make(family, task + 1)
    other.reset(seed=0)
    assert not np.allclose(other.unwrapped.goal, env.unwrapped.goal)


@pytest.mark.parametrize("family,task", ML1_CASES)
def test_ml1_goal_and_task_param_defined_at_construction(ml1_reference, family, task):
    raw = _raw_metaworld(ml1_reference, family, task)
    raw.reset()
    u = _make(family, task).unwrapped  # no reset: the task pins the goal already
    assert np.shape(u.goal) == (3,)
    np.testing.assert_allclose(u.goal, raw._target_pos)
    np.testing.assert_allclose(u.task_param, raw._target_pos)


@pytest.mark.parametrize("family", sorted(METAWORLD))
def test_ml1_task_params_are_goal_positions(ml1_reference, family, monkeypatch):
    # Building all 50 Meta-World envs is slow; shrink the family to its first two tasks (and keep
    # the shrunken goals out of any cache that later callers would read).
    small = dataclasses.replace(get_family(family), num_tasks=2, test_tasks=(1,))
    monkeypatch.setitem(FAMILIES, family, small)
    params = small.task_params  # cached per (env id, task count): the full family's goals are not affected
    assert params.shape == (2, 3)
    for task in range(2):
        raw = _raw_metaworld(ml1_reference, family, task)
        raw.reset()
        np.testing.assert_allclose(params[task], raw._target_pos)


@pytest.mark.parametrize("family,task", ML1_CASES)
def test_ml1_reward_and_obs_match_metaworld(ml1_reference, family, task):
    raw = _raw_metaworld(ml1_reference, family, task)
    env = _make(family, task)
    raw_obs, _ = raw.reset()
    obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(obs[:36], raw_obs[:36])
    rng = np.random.default_rng(task)
    for _ in range(15):
        action = rng.uniform(-1, 1, size=4).astype(np.float32)
        raw_obs, raw_reward, _, _, raw_info = raw.step(action)
        obs, reward, terminated, truncated, info = env.step(action)
        assert obs.shape == (39,)
        np.testing.assert_array_equal(obs[36:], 0.0)  # goal hidden
        np.testing.assert_allclose(obs[:36], raw_obs[:36])
        np.testing.assert_allclose(reward, raw_reward, rtol=1e-12, atol=1e-12)
        assert isinstance(info["success"], bool)
        assert info["success"] == bool(raw_info["success"])
        assert not terminated and not truncated


@pytest.mark.parametrize("family,task", ML1_CASES)
def test_ml1_goal_visible_copy(family, task):
    hidden = _make(family, task)
    visible = _make(family, task, goal_visible=True)
    obs_h, _ = hidden.reset(seed=7)
    obs_v, _ = visible.reset(seed=7)
    goal = visible.unwrapped.goal
    np.testing.assert_allclose(goal, hidden.unwrapped.goal)
    rng = np.random.default_rng(0)
    for step in range(16):
        np.testing.assert_array_equal(obs_h[36:], 0.0, err_msg=f"goal not hidden at step {step}")
        np.testing.assert_allclose(obs_v[36:], goal, err_msg=f"goal not visible at step {step}")
        np.testing.assert_allclose(obs_v[:36], obs_h[:36])
        action = rng.uniform(-1, 1, size=4).astype(np.float32)
        obs_h, r_h, _, _, info_h = hidden.step(action)
        obs_v, r_v, _, _, info_v = visible.step(action)
        assert r_h == r_v
        assert info_h["success"] == info_v["success"]


def test_ml1_truncates_at_500():
    env = _make("ml1_reach", 11)
    env.reset(seed=0)
    action = np.zeros(4, dtype=np.float32)
    for t in range(1, 501):
        _, _, terminated, truncated, _ = env.step(action)
        assert not terminated
        assert truncated == (t == 500)
