"""Rollout layer: the DTPolicy context window and the batched evaluator against the sequential one."""

import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

from promptdiff.envs import get_family
from promptdiff.prompt import Prompt
from promptdiff.units import ACTION_PAD, PLMUnits
from promptdiff.models.prompt_dt import PromptDT
from promptdiff.rollout import DTPolicy, episode_seed, evaluate, evaluate_sequential

# Most tests evaluate without a dataset card on purpose (normalised scores None).
pytestmark = pytest.mark.filterwarnings("ignore:.*dataset card not found:RuntimeWarning")


def random_prompts(fam, tasks, L=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        t: Prompt(torch.randn(1, L, fam.obs_dim, generator=g), torch.rand(1, L, fam.act_dim, generator=g) * 2 - 1,
                  torch.randn(1, L, 1, generator=g), torch.arange(L)[None] + 3, torch.ones(1, L))  # fmt: skip
        for t in tasks
    }


def small_policy(fam, action_gain=1.0, K=4):
    """Random PromptDT (width 32, 1 layer); `action_gain` scales the action head's weights."""
    torch.manual_seed(0)
    model = PromptDT(fam.obs_dim, fam.act_dim, width=32, layers=1, mlp_width=64, context_length=K,
                     prompt_length=5, max_timestep=fam.horizon)  # fmt: skip
    with torch.no_grad():
        model.action_head[0].weight.mul_(action_gain)
    rng = np.random.default_rng(0)
    return DTPolicy(model, PLMUnits(rng.normal(size=fam.obs_dim) * 0.1, 1 + rng.random(fam.obs_dim), fam.rtg_scale,
                                    fam.horizon, context_length=K))  # fmt: skip


class RecordingModel(nn.Module):
    """Stub with PromptDT's forward signature: records its inputs, predicts a constant action."""

    def __init__(self, obs_dim=2, act_dim=2, context_length=3, max_timestep=4, action=(0.0, 0.0)):
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.context_length, self.max_timestep = context_length, max_timestep
        self.register_buffer("action", torch.tensor(action, dtype=torch.float32))
        self.calls = []

    def forward(self, states, actions, returns_to_go, timesteps, mask, prompt=None):
        self.calls.append({"states": states.clone(), "actions": actions.clone(), "rtg": returns_to_go.clone(),
                           "timesteps": timesteps.clone(), "mask": mask.clone(), "prompt": prompt})  # fmt: skip
        return self.action.expand(states.shape[0], states.shape[1], self.act_dim).clone()


def stub_policy(fam, action):
    model = RecordingModel(fam.obs_dim, fam.act_dim, context_length=3, max_timestep=fam.horizon, action=action)
    return DTPolicy(model, PLMUnits(np.zeros(fam.obs_dim), np.ones(fam.obs_dim), fam.rtg_scale, fam.horizon,
                                    context_length=3)), model  # fmt: skip


# -- (a) batched evaluator == sequential reference ------------------------------------------------


def assert_same_episodes(batched, sequential, tasks, rtol=1e-5):
    for t in tasks:
        np.testing.assert_allclose(batched["tasks"][t]["returns"], sequential["tasks"][t]["returns"], rtol=rtol)
        assert batched["tasks"][t]["lengths"] == sequential["tasks"][t]["lengths"]
    assert batched["env_steps"] == sequential["env_steps"]


def test_batched_equals_sequential_point_robot():
    fam = get_family("point_robot")
    tasks = [3, 11]
    policy, prompts = small_policy(fam), random_prompts(fam, tasks)
    batched = evaluate(policy, fam.name, tasks, prompts, episodes=3, seed=5, card_root="/nonexistent")
    sequential = evaluate_sequential(policy, fam.name, tasks, prompts, episodes=3, seed=5, card_root="/nonexistent")
    assert_same_episodes(batched, sequential, tasks)
    assert batched["n_envs"] == 6 and batched["policy_calls"] == fam.horizon
    assert batched["env_steps"] == 6 * fam.horizon
    # Different prompts make different behaviour (the prompt reaches the model per env).
    assert batched["tasks"][3]["return_mean"] != pytest.approx(batched["tasks"][11]["return_mean"])
    assert batched["return_mean"] == pytest.approx(np.mean([batched["tasks"][t]["return_mean"] for t in tasks]))


def test_batched_equals_sequential_ant_with_early_terminations():
    fam = get_family("ant_dir")
    tasks = [6, 17]
    # A large action head saturates the actions: the ant falls over at different times.
    policy, prompts = small_policy(fam, action_gain=10.0), random_prompts(fam, tasks)
    batched = evaluate(policy, fam.name, tasks, prompts, episodes=2, seed=1, card_root="/nonexistent")
    sequential = evaluate_sequential(policy, fam.name, tasks, prompts, episodes=2, seed=1, card_root="/nonexistent")
    # the same episodes; the policy's float32 matmuls round differently for 1 and 4 environments per call (kernel
    # choice, thread split), which the falling ant's dynamics amplify: returns agree to 1e-3 (measured: 3e-5 with
    # 1 thread, 2e-4 with 2), not bit for bit; per-step agreement of actions is tested on the shipped PLM below
    assert_same_episodes(batched, sequential, tasks, rtol=1e-3)
    lengths = [n for t in tasks for n in batched["tasks"][t]["lengths"]]
    assert min(lengths) < fam.horizon, "no episode ended early: the test would not exercise early endings"
    assert len(set(lengths)) >= 2, "all episodes ended together: the test would not exercise early endings"
    assert batched["policy_calls"] == max(lengths)
    assert batched["env_steps"] == sum(lengths)


def test_results_do_not_depend_on_the_company_and_async_matches_sync():
    fam = get_family("point_robot")
    policy = small_policy(fam)
    prompts = random_prompts(fam, [3, 11, 19])
    alone = evaluate(policy, fam.name, [11], prompts, episodes=1, seed=2, card_root="/nonexistent")
    crowd = evaluate(policy, fam.name, [3, 11, 19], prompts, episodes=2, seed=2, card_root="/nonexistent",
                     vectorization="async")  # fmt: skip
    np.testing.assert_allclose(alone["tasks"][11]["returns"], crowd["tasks"][11]["returns"][:1], rtol=1e-5)
    assert episode_seed(2, 11, 0) != episode_seed(2, 11, 1) != episode_seed(3, 11, 1)


# -- (b) the context window -----------------------------------------------------------------------


def test_window_left_padding_history_rtg_and_timesteps():
    K, scale, target = 3, 10.0, 4.0
    model = RecordingModel(context_length=K, max_timestep=4, action=(5.0, -0.25))
    mean, std = np.array([1.0, -1.0]), np.array([2.0, 4.0])
    policy = DTPolicy(model, PLMUnits(mean, std, scale, max_timestep=4, context_length=K))
    prompts = Prompt(torch.arange(2.0)[:, None, None].expand(2, 1, 2).clone(), torch.zeros(2, 1, 2),
                     torch.zeros(2, 1, 1), torch.zeros(2, 1, dtype=torch.long), torch.ones(2, 1))  # fmt: skip
    policy.reset(prompts, np.array([target, 2 * target]), horizon=3)  # horizon 3 forces the buffers to grow

    rng = np.random.default_rng(0)
    obs_hist, rewards_hist = [], []
    both, only0 = np.array([True, True]), np.array([True, False])
    for step in range(5):
        active = only0 if step == 2 else both  # env 1 sits out step 2: its history must not advance
        obs = rng.normal(size=(2, 2))
        a = policy.act(obs, active)
        # clipped to [-1, 1]; inactive rows get zeros
        np.testing.assert_array_equal(a[0], [1.0, -0.25])
        np.testing.assert_array_equal(a[1], [0.0, 0.0] if step == 2 else [1.0, -0.25])
        r = rng.normal(size=2)
        policy.record(r, active)
        obs_hist.append(obs[0])
        rewards_hist.append(r[0])
        call = model.calls[-1]
        assert call["states"].shape == (2 if active.all() else 1, K, 2)

        if step == 0:  # one real step, two padded ones on the left
            np.testing.assert_array_equal(call["mask"][0].numpy(), [0, 0, 1])
            np.testing.assert_array_equal(call["states"][0, :2].numpy(), 0)
            np.testing.assert_array_equal(call["actions"][0, :2].numpy(), ACTION_PAD)
            np.testing.assert_array_equal(call["actions"][0, 2].numpy(), 0)  # current slot
            np.testing.assert_allclose(call["rtg"][0, :, 0].numpy(), [0, 0, target / scale], rtol=1e-6)
            np.testing.assert_allclose(call["rtg"][1, :, 0].numpy(), [0, 0, 2 * target / scale], rtol=1e-6)
            np.testing.assert_array_equal(call["timesteps"][0].numpy(), [0, 0, 0])
            torch.testing.assert_close(call["prompt"].states, prompts.states)
        if step == 2:  # only env 0 runs: its own prompt row is selected
            torch.testing.assert_close(call["prompt"].states, prompts.states[:1])

    # After 5 steps env 0 sees steps 2, 3, 4 (no padding); the model was called at step 4.
    call = model.calls[-1]
    expect_states = (np.array(obs_hist[2:]) - mean) / std
    np.testing.assert_allclose(call["states"][0].numpy(), expect_states, rtol=1e-6)
    np.testing.assert_array_equal(call["mask"][0].numpy(), [1, 1, 1])
    np.testing.assert_array_equal(call["actions"][0].numpy(), [[1.0, -0.25], [1.0, -0.25], [0.0, 0.0]])
    rtg = target / scale - np.concatenate([[0.0], np.cumsum(rewards_hist)]) / scale  # R_0 .. R_5
    np.testing.assert_allclose(call["rtg"][0, :, 0].numpy(), rtg[2:5], rtol=1e-6)
    np.testing.assert_array_equal(call["timesteps"][0].numpy(), [2, 3, 3])  # clipped to max_timestep - 1
    # env 1 skipped a step: it has seen 4 observations, its window covers steps 1, 2, 3
    np.testing.assert_array_equal(policy.steps, [5, 4])
    np.testing.assert_array_equal(call["timesteps"][1].numpy(), [1, 2, 3])
    np.testing.assert_array_equal(call["mask"][1].numpy(), [1, 1, 1])


def test_act_record_protocol_is_enforced():
    policy = DTPolicy(RecordingModel(), PLMUnits(np.zeros(2), np.ones(2), 1.0, max_timestep=4, context_length=3))
    policy.reset(None, np.zeros(1))
    policy.act(np.zeros((1, 2)))
    with pytest.raises(RuntimeError):
        policy.act(np.zeros((1, 2)))
    policy.record(np.zeros(1))
    with pytest.raises(RuntimeError):
        policy.record(np.zeros(1))


def test_policy_matches_promptdt_forward_on_the_same_window():
    """DTPolicy's action is PromptDT's last prediction on the window it builds (to float32 rounding: it acts step
    by step, the prompt cached)."""
    fam = get_family("point_robot")
    policy = small_policy(fam)
    prompts = Prompt.cat(list(random_prompts(fam, [0, 1]).values()))
    policy.reset(prompts, np.array([-5.0, -7.0]), horizon=fam.horizon)
    for _ in range(6):
        obs = np.random.default_rng(1).normal(size=(2, 2))
        a = policy.act(obs)
        policy.record(np.array([-1.0, -2.0]))
    policy.act(obs)
    window = {k: torch.from_numpy(v) for k, v in policy.window(np.arange(2)).items()}
    with torch.no_grad():
        expect = policy.model(**window, prompt=prompts)[:, -1].clamp(-1, 1).numpy()
    np.testing.assert_allclose(policy._last_action, expect, rtol=1e-6, atol=1e-6)  # float32 rounding
    assert a.dtype == np.float32


# -- (c) normalised score from the dataset card -----------------------------------------------------


def test_normalised_score_from_card(tmp_path):
    fam = get_family("point_robot")
    card = {"family": fam.name, "tasks": {"3": {"expert_return": -5.0, "random_return": -22.0},
                                          "11": {"expert_return": -4.0, "random_return": -30.0}}}  # fmt: skip
    (tmp_path / fam.name).mkdir()
    (tmp_path / fam.name / "card.json").write_text(json.dumps(card))
    policy = small_policy(fam)
    res = evaluate(policy, fam.name, [3, 11], random_prompts(fam, [3, 11]), episodes=2, card_root=tmp_path)
    for t in (3, 11):
        c = card["tasks"][str(t)]
        expect = (res["tasks"][t]["return_mean"] - c["random_return"]) / (c["expert_return"] - c["random_return"])
        assert res["tasks"][t]["normalised_score"] == pytest.approx(expect)
    scores = [res["tasks"][t]["normalised_score"] for t in (3, 11)]
    assert res["score_mean"] == pytest.approx(np.mean(scores))
    json.dumps(res)  # a plain dict


def test_missing_card_gives_none_and_warns_once(tmp_path):
    fam = get_family("point_robot")
    policy, prompts = small_policy(fam), random_prompts(fam, [3])
    with pytest.warns(RuntimeWarning, match="card"):
        res = evaluate(policy, fam.name, [3], prompts, episodes=1, card_root=tmp_path)
    assert res["tasks"][3]["normalised_score"] is None and res["score_mean"] is None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate_sequential(policy, fam.name, [3], prompts, episodes=1, card_root=tmp_path)  # no second warning


# -- (d) success rate -----------------------------------------------------------------------------------


def test_success_rate_point_robot():
    fam = get_family("point_robot")
    tasks = [0, 39]  # goals (1, 0) and (-1, 0)
    prompts = random_prompts(fam, tasks)
    # Standing still never reaches a goal on the unit circle.
    policy, _ = stub_policy(fam, action=(0.0, 0.0))
    res = evaluate(policy, fam.name, tasks, prompts, episodes=2, card_root="/nonexistent")
    assert res["tasks"][0]["success_rate"] == 0.0 and res["success_mean"] == 0.0
    assert res["tasks"][0]["return_mean"] == pytest.approx(-fam.horizon)  # distance 1 at every step
    # Stepping +x at full speed passes through goal (1, 0) at step 10 (then overshoots: success
    # counts at any step) and never gets near (-1, 0).
    policy, _ = stub_policy(fam, action=(0.1, 0.0))
    for run in (evaluate, evaluate_sequential):
        res = run(policy, fam.name, tasks, prompts, episodes=2, card_root="/nonexistent")
        assert res["tasks"][0]["success_rate"] == 1.0 and res["tasks"][39]["success_rate"] == 0.0
        assert res["success_mean"] == 0.5


def test_families_without_success_have_no_success_keys():
    fam = get_family("ant_dir")
    policy, _ = stub_policy(fam, action=(0.0,) * fam.act_dim)
    res = evaluate(policy, fam.name, [6], random_prompts(fam, [6]), episodes=1, card_root="/nonexistent")
    assert "success_mean" not in res and "success_rate" not in res["tasks"][6]


def test_rollout_layer_does_not_import_lightning():
    import subprocess

    code = ("import sys, promptdiff.rollout, promptdiff.rollout.evaluator as e, promptdiff.data.cards;"
            "assert not [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')]")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True)


class CheckedPolicy(DTPolicy):
    """A DTPolicy that, at every step, also runs the PLM's full forward pass on the same window and prompt and
    records how far the step-by-step action (prompt cached, last action only) is from it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_diff, self.checked = 0.0, 0

    def act(self, obs, active=None):
        out = super().act(obs, active)
        ids = np.flatnonzero(np.ones(self.n_envs, bool) if active is None else active)
        window = {k: torch.from_numpy(v) for k, v in self.window(ids).items()}
        prompt = None if self.prompts is None else self.prompts.index(torch.from_numpy(ids))
        with torch.inference_mode():
            full = self.model(**window, prompt=prompt)[:, -1].clamp(-1, 1).numpy()
        self.max_diff = max(self.max_diff, float(np.abs(full - out[ids]).max()))
        self.checked += len(ids)
        return out


@pytest.mark.parametrize("family", ["ant_dir", "point_robot"])
def test_step_by_step_actions_equal_the_full_forward_over_whole_episodes(family):
    """The shipped PLM acting step by step (prompt keys/values computed once, only the last action) gives the
    full forward pass's actions to float32 rounding, over whole episodes: left padding (t < K), environments that
    finish early (inactive rows, the cached prompt indexed), and beyond the context."""
    from promptdiff.methods import PromptDTPretrain

    plm = PromptDTPretrain.load_policy(f"datasets/{get_family(family).plm_name}/plm.ckpt")
    fam = get_family(family)
    policy = CheckedPolicy(plm.model, plm.units)
    tasks = list(fam.test_tasks)[:3]
    result = evaluate(policy, family, tasks, random_prompts(fam, tasks), 2, seed=0)
    assert policy._stepwise and policy.checked == result["env_steps"] > 0
    # environments ending at different steps: rows drop out while the others go on
    n = 4
    policy.reset(Prompt.cat(list(random_prompts(fam, range(n), seed=1).values())), np.full(n, 100.0), horizon=60)
    rng = np.random.default_rng(0)
    for step in range(60):
        active = np.array([True, step < 10, step < 35, step % 2 == 0 or step < 25])
        if not active.any():
            break
        policy.act(rng.normal(size=(n, fam.obs_dim)), active)
        policy.record(rng.normal(size=n), active)
    assert policy.max_diff < 1e-5, policy.max_diff


def test_bf16_policy_acts_within_bfloat16_rounding_of_float32():
    """precision="bf16" runs the shipped PLM's steps under bfloat16 autocast: actions move by bfloat16 rounding
    (3 significant digits), not more; anything but "32"/"bf16" is refused."""
    from promptdiff.methods import PromptDTPretrain

    fam = get_family("ant_dir")
    plm = PromptDTPretrain.load_policy(f"datasets/{fam.plm_name}/plm.ckpt")
    prompts = Prompt.cat(list(random_prompts(fam, [0, 1, 2]).values()))
    rng = np.random.default_rng(0)
    obs = [rng.normal(size=(3, fam.obs_dim)) * 0.3 for _ in range(25)]
    actions = {}
    for precision in ("32", "bf16"):
        policy = DTPolicy(plm.model, plm.units, precision=precision)
        policy.reset(prompts, np.full(3, 500.0), horizon=fam.horizon)
        out = []
        for o in obs:
            out.append(policy.act(o))
            policy.record(np.ones(3))
        actions[precision] = np.stack(out)
    diff = np.abs(actions["bf16"] - actions["32"])
    assert 0 < diff.max() < 0.02, diff.max()  # 0.005 measured
    with pytest.raises(ValueError, match="precision 'fp16'"):
        DTPolicy(plm.model, plm.units, precision="fp16")


def test_progress_bar_only_when_asked(capsys):
    fam = get_family("point_robot")
    tasks = [3, 11]
    policy, prompts = small_policy(fam), random_prompts(fam, tasks)
    quiet = evaluate(policy, fam.name, tasks, prompts, episodes=2, card_root="/nonexistent")
    assert capsys.readouterr().err == ""
    shown = evaluate(policy, fam.name, tasks, prompts, episodes=2, card_root="/nonexistent",
                     progress="final rollout (expert prompt)")  # fmt: skip
    err = capsys.readouterr().err
    assert "final rollout (expert prompt)" in err and f"/{fam.horizon} " in err  # a bar over the episode steps
    for t in tasks:  # the bar changes nothing
        assert shown["tasks"][t]["returns"] == quiet["tasks"][t]["returns"]


def test_limit_threads_sets_torch_and_what_the_process_starts():
    """What a worker calls first (asynchronous vector-env, collection and expert-training workers): one thread for
    torch if it is already imported, and OMP_NUM_THREADS for anything it imports or starts afterwards."""
    import subprocess

    probe = ("import os, subprocess, sys, torch; torch.set_num_threads(2); from promptdiff.threads import limit_threads; "
             "limit_threads(1); child = subprocess.run([sys.executable, '-c', 'import torch; print(torch.get_num_threads())'], "
             "capture_output=True, text=True).stdout.strip(); print(torch.get_num_threads(), child)")  # fmt: skip
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert out.stdout.split() == ["1", "1"], out.stderr
