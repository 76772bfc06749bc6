"""Packed task data and the vectorised (prompt, segment) sampler."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from promptdiff.production.collect import collect, default_collect_config
from promptdiff.data.hdf5_format import Trajectory, dataset_path, open_trajectories
from promptdiff.data.segments import SegmentSampler, TaskData, load_family_data, state_statistics
from promptdiff.envs import get_family
from promptdiff.prompt import Prompt
from promptdiff.units import ACTION_PAD, PLMUnits


def make_traj(task, traj_id, T, act_dim=2, rewards=None, seed=0):
    """A trajectory whose states encode where they come from: o_t = [task, traj_id, t, noise]."""
    rng = np.random.default_rng([seed, task, traj_id])
    obs = np.zeros((T + 1, 4), np.float32)
    obs[:, 0], obs[:, 1], obs[:, 2] = task, traj_id, np.arange(T + 1)
    obs[:, 3] = rng.normal(size=T + 1)
    actions = np.repeat(np.arange(T, dtype=np.float32)[:, None] / 1000.0, act_dim, axis=1)
    rewards = rng.normal(size=T).astype(np.float32) if rewards is None else np.asarray(rewards, np.float32)
    return Trajectory(obs, actions, rewards, np.zeros(T, bool), np.zeros(T, bool), task)


def identity_sampler(train, prompt, **kw):
    """A sampler with mean 0, std 1 and rtg_scale 1, so batch values are the raw values."""
    kw = {"K": 5, "prompt_length": 5, "max_timestep": 1000, **kw}
    return SegmentSampler(train, prompt, units(np.zeros(4), np.ones(4), 1.0, **kw))


def units(mean, std, rtg_scale, K=20, prompt_length=5, max_timestep=1000):
    return PLMUnits(mean, std, rtg_scale, max_timestep, context_length=K, prompt_length=prompt_length)


# -- TaskData -----------------------------------------------------------------------------------


def test_task_data_packs_states_and_returns_to_go():
    a = make_traj(0, 0, 4, rewards=[1.0, 2.0, 3.0, 4.0])
    b = make_traj(0, 1, 3, rewards=[0.5, -1.0, 2.0])
    d = TaskData.from_trajectories([a, b])
    assert d.task_id == 0 and d.num_steps == 7 and d.num_trajectories == 2
    np.testing.assert_array_equal(d.offsets, [0, 4])
    np.testing.assert_array_equal(d.lengths, [4, 3])
    np.testing.assert_array_equal(d.timesteps, [0, 1, 2, 3, 0, 1, 2])
    np.testing.assert_array_equal(d.states, np.concatenate([a.observations[:-1], b.observations[:-1]]))
    np.testing.assert_array_equal(d.actions, np.concatenate([a.actions, b.actions]))
    # hand computation: 1+2+3+4, 2+3+4, 3+4, 4 | 0.5-1+2, -1+2, 2
    np.testing.assert_allclose(d.returns_to_go, [10, 9, 7, 4, 1.5, 1.0, 2.0])
    np.testing.assert_array_equal(d.states[d.trajectory_slice(1)], b.observations[:-1])
    with pytest.raises(ValueError):
        TaskData.from_trajectories([])


def test_state_statistics_over_given_tasks_with_floor():
    d0 = TaskData.from_trajectories([make_traj(0, 0, 6), make_traj(0, 1, 4)])
    d1 = TaskData.from_trajectories([make_traj(1, 0, 5)])
    mean, std = state_statistics({0: d0, 1: d1})
    allstates = np.concatenate([d0.states, d1.states]).astype(np.float64)
    np.testing.assert_allclose(mean, allstates.mean(0))
    np.testing.assert_allclose(std, allstates.std(0))
    _, std0 = state_statistics({0: d0})
    assert std0[0] == 1e-6  # dimension 0 (the task id) is constant within one task


# -- prompts ------------------------------------------------------------------------------------


def test_prompt_is_the_tail_ending_at_T_minus_2():
    T = 10
    traj = make_traj(0, 0, T, rewards=np.arange(1, T + 1))
    data = {0: TaskData.from_trajectories([traj])}
    prompt, _ = identity_sampler(data, data).sample(0, 3, np.random.default_rng(0))
    assert isinstance(prompt, Prompt) and prompt.batch_size == 3 and prompt.length == 5
    steps = np.arange(T - 6, T - 1)  # 4 .. 8
    rtg = np.cumsum(np.arange(1, T + 1)[::-1])[::-1]
    for i in range(3):
        np.testing.assert_array_equal(prompt.states[i].numpy(), traj.observations[steps])
        np.testing.assert_array_equal(prompt.actions[i].numpy(), traj.actions[steps])
        np.testing.assert_array_equal(prompt.timesteps[i].numpy(), steps)
        np.testing.assert_allclose(prompt.returns_to_go[i, :, 0].numpy(), rtg[steps])
        np.testing.assert_array_equal(prompt.mask[i].numpy(), np.ones(5))


def test_short_trajectory_is_left_padded():
    # a length-3 trajectory built by hand
    obs = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [9.0, 10.0, 11.0, 12.0], [0.0, 0.0, 0.0, 0.0]],
                   np.float32)  # fmt: skip
    acts = np.array([[0.1, -0.1], [0.2, -0.2], [0.3, -0.3]], np.float32)
    short = Trajectory(obs, acts, np.array([1.0, 2.0, 4.0], np.float32), np.zeros(3, bool), np.zeros(3, bool), 7)
    data = {7: TaskData.from_trajectories([short])}
    sampler = identity_sampler(data, data, K=5, prompt_length=5)
    prompt, seg = sampler.sample(7, 64, np.random.default_rng(1))

    # prompt: the tail ends at T-2 = 1, so steps 0, 1 are real and three pad steps precede them
    np.testing.assert_array_equal(prompt.mask[0].numpy(), [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(prompt.states[0, :3].numpy(), np.zeros((3, 4)))
    np.testing.assert_array_equal(prompt.actions[0, :3].numpy(), np.full((3, 2), ACTION_PAD))
    np.testing.assert_array_equal(prompt.returns_to_go[0, :, 0].numpy(), [0, 0, 0, 7, 6])
    np.testing.assert_array_equal(prompt.timesteps[0].numpy(), [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(prompt.states[0, 3:].numpy(), obs[:2])

    # segments: start s in {0, 1, 2}; 3 - s real steps, right-aligned
    rtg = np.array([7.0, 6.0, 4.0])
    starts = set()
    for i in range(64):
        n_real = int(seg["mask"][i].sum())
        s = 3 - n_real
        starts.add(s)
        expected_mask = np.r_[np.zeros(5 - n_real), np.ones(n_real)]
        np.testing.assert_array_equal(seg["mask"][i].numpy(), expected_mask)
        pad = slice(0, 5 - n_real)
        np.testing.assert_array_equal(seg["states"][i, pad].numpy(), 0.0)
        np.testing.assert_array_equal(seg["actions"][i, pad].numpy(), ACTION_PAD)
        np.testing.assert_array_equal(seg["returns_to_go"][i, pad].numpy(), 0.0)
        np.testing.assert_array_equal(seg["timesteps"][i, pad].numpy(), 0)
        real = slice(5 - n_real, 5)
        np.testing.assert_array_equal(seg["states"][i, real].numpy(), obs[s:3])
        np.testing.assert_array_equal(seg["actions"][i, real].numpy(), acts[s:3])
        np.testing.assert_allclose(seg["returns_to_go"][i, real, 0].numpy(), rtg[s:3])
        np.testing.assert_array_equal(seg["timesteps"][i, real].numpy(), np.arange(s, 3))
    assert starts == {0, 1, 2}


# -- segments -----------------------------------------------------------------------------------


def test_segments_stay_inside_one_trajectory():
    lengths = [3, 25, 8, 40, 1, 17]
    train = {0: TaskData.from_trajectories([make_traj(0, j, T) for j, T in enumerate(lengths)])}
    prompt = {0: TaskData.from_trajectories([make_traj(0, 0, 12)])}
    sampler = identity_sampler(train, prompt, K=10)
    _, seg = sampler.sample(0, 2000, np.random.default_rng(2))
    states, mask, ts = seg["states"].numpy(), seg["mask"].numpy(), seg["timesteps"].numpy()
    assert seg["states"].shape == (2000, 10, 4) and seg["actions"].shape == (2000, 10, 2)
    assert seg["returns_to_go"].shape == (2000, 10, 1)
    assert seg["timesteps"].dtype == torch.int64 and seg["mask"].dtype == torch.float32
    seen = set()
    for i in range(2000):
        real = mask[i] == 1
        n = int(real.sum())
        assert n >= 1 and real[10 - n :].all()  # left padding only
        traj_id = states[i, real, 1]
        assert np.all(traj_id == traj_id[0])  # one trajectory
        steps = ts[i, real]
        np.testing.assert_array_equal(np.diff(steps), 1)  # consecutive steps
        np.testing.assert_array_equal(states[i, real, 2], steps)  # the state of that step
        T = lengths[int(traj_id[0])]
        assert steps[-1] <= T - 1 and (n == 10 or steps[-1] == T - 1)  # short only at the episode end
        seen.add((int(traj_id[0]), int(steps[0])))
    assert {j for j, _ in seen} == set(range(len(lengths)))
    assert (4, 0) in seen and (3, 39) in seen  # the one-step episode and the very last step


def test_timesteps_are_clipped_to_max_timestep():
    train = {0: TaskData.from_trajectories([make_traj(0, 0, 30)])}
    sampler = identity_sampler(train, train, K=30, max_timestep=20)
    prompt, seg = sampler.sample(0, 50, np.random.default_rng(3))
    assert seg["timesteps"].max() == 19 and prompt.timesteps.max() == 19
    assert seg["states"][..., 2].max() > 19  # the data themselves are not clipped


def test_normalisation_uses_given_mean_std_and_rtg_scale():
    train = {0: TaskData.from_trajectories([make_traj(0, j, 15, seed=5) for j in range(3)])}
    raw = train[0].states.astype(np.float64)
    mean, std = np.array([0.3, -1.0, 2.0, 0.5]), np.array([2.0, 0.5, 4.0, 3.0])
    sampler = SegmentSampler(train, train, units(mean, std, rtg_scale=8.0, K=6, prompt_length=4, max_timestep=100))
    prompt, seg = sampler.sample(0, 200, np.random.default_rng(4))
    d = train[0]
    for states, rtg, mask, ts in [(seg["states"], seg["returns_to_go"], seg["mask"], seg["timesteps"]),
                                  (prompt.states, prompt.returns_to_go, prompt.mask, prompt.timesteps)]:  # fmt: skip
        real = mask.numpy() == 1
        s = states.numpy()[real].astype(np.float64)
        unnorm = s * std + mean
        traj = np.rint(unnorm[:, 1]).astype(int)
        rows = d.offsets[traj] + ts.numpy()[real]
        np.testing.assert_allclose(s, (raw[rows] - mean) / std, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(rtg.numpy()[real][:, 0], d.returns_to_go[rows] / 8.0, rtol=1e-5, atol=1e-6)


def test_same_seed_same_batch_different_seed_different_batch():
    train = {t: TaskData.from_trajectories([make_traj(t, j, 30) for j in range(4)]) for t in range(3)}
    sampler = identity_sampler(train, train, K=8)

    def draw(seed):
        p, seg, ids = sampler.sample_all([0, 1, 2], 8, np.random.default_rng(seed))
        return [p.states, p.timesteps, seg["states"], seg["timesteps"], seg["mask"], ids]

    a, b, c = draw(11), draw(11), draw(12)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_sample_all_shapes_and_task_blocks():
    tasks = [5, 2, 9]
    train = {t: TaskData.from_trajectories([make_traj(t, j, 20, act_dim=3) for j in range(3)]) for t in tasks}
    prompt = {t: TaskData.from_trajectories([make_traj(t, j, 20, act_dim=3) for j in range(2)]) for t in tasks}
    sampler = identity_sampler(train, prompt, K=7, prompt_length=5)
    p, seg, ids = sampler.sample_all(tasks, 4, np.random.default_rng(0))
    assert p.states.shape == (12, 5, 4) and p.actions.shape == (12, 5, 3)
    assert p.returns_to_go.shape == (12, 5, 1) and p.timesteps.shape == (12, 5) and p.mask.shape == (12, 5)
    shapes = {k: tuple(v.shape) for k, v in seg.items()}
    assert shapes == {"states": (12, 7, 4), "actions": (12, 7, 3), "returns_to_go": (12, 7, 1),
                      "timesteps": (12, 7), "mask": (12, 7)}  # fmt: skip
    assert p.states.dtype == seg["states"].dtype == torch.float32
    assert p.timesteps.dtype == seg["timesteps"].dtype == ids.dtype == torch.int64
    np.testing.assert_array_equal(ids.numpy(), np.repeat(tasks, 4))
    # every row's prompt and segment come from the row's task (state dim 0 holds the task)
    np.testing.assert_array_equal(p.states[:, -1, 0].numpy(), ids.numpy())
    np.testing.assert_array_equal(seg["states"][:, -1, 0].numpy(), ids.numpy())
    with pytest.raises(KeyError, match="task 4"):
        sampler.sample(4, 2, np.random.default_rng(0))


def test_sample_all_runs_on_ant_sized_synthetic_data():
    rng = np.random.default_rng(0)

    def traj(t, T=200):
        return Trajectory(rng.normal(size=(T + 1, 27)).astype(np.float32), rng.uniform(-1, 1, (T, 8)).astype(np.float32),
                          rng.normal(size=T).astype(np.float32), np.zeros(T, bool), np.zeros(T, bool), t)  # fmt: skip

    train = {t: TaskData.from_trajectories([traj(t) for _ in range(4)]) for t in range(45)}
    prompt = {t: TaskData.from_trajectories([traj(t) for _ in range(2)]) for t in range(45)}
    mean, std = state_statistics(train)
    sampler = SegmentSampler(train, prompt, units(mean, std, 500.0, K=20, prompt_length=5, max_timestep=200))
    p, seg, ids = sampler.sample_all(range(45), 16, np.random.default_rng(1))
    assert p.states.shape == (720, 5, 27) and seg["actions"].shape == (720, 20, 8) and ids.shape == (720,)
    assert torch.isfinite(seg["states"]).all() and seg["mask"][:, -1].eq(1).all()


# -- loading ------------------------------------------------------------------------------------


def test_load_family_data_from_collected_files(tmp_path):
    collect(default_collect_config("point_robot", root=str(tmp_path), tasks=[0, 3, 39], episodes_per_task=3,
                                   prompt_episodes=2, card=False))  # fmt: skip
    fam = replace(get_family("point_robot"), test_tasks=(3,), train_tasks_override=(0, 39))
    train, prompt = load_family_data(fam, root=tmp_path)
    assert sorted(train) == sorted(prompt) == [0, 3, 39]
    assert [train[t].num_trajectories for t in (0, 3, 39)] == [3, 3, 3]
    assert [prompt[t].num_trajectories for t in (0, 3, 39)] == [2, 2, 2]
    with open_trajectories(dataset_path("point_robot", "train", root=tmp_path)) as f:
        first = f.by_task([3])[3][0]
    d = train[3]
    assert d.task_id == 3 and d.obs_dim == 2 and d.act_dim == 2
    np.testing.assert_array_equal(d.states[d.trajectory_slice(0)], first.observations[:-1])
    assert d.returns_to_go[0] == pytest.approx(first.episode_return, rel=1e-5, abs=1e-5)

    mean, std = state_statistics({t: train[t] for t in fam.train_tasks})
    sampler = SegmentSampler(train, prompt, units(mean, std, fam.rtg_scale, K=20, prompt_length=5,
                                                  max_timestep=fam.horizon))  # fmt: skip
    p, seg, ids = sampler.sample_all(fam.train_tasks, 4, np.random.default_rng(0))
    assert p.states.shape == (8, 5, 2) and seg["states"].shape == (8, 20, 2)
    assert seg["timesteps"].max() < fam.horizon
