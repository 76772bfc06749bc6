"""Learned experts: PPO training resumes from its checkpoint; the exported actor matches SB3."""

import json

import numpy as np
import pytest
import yaml

from promptdiff.production.expert_policy import load_expert_actor
from promptdiff.production.expert_training import ExpertTrainingConfig, _latest_checkpoint, train_expert
from promptdiff.production.task_conditioning import make_conditioned_env, task_features

from test_collect import ROOT


@pytest.mark.parametrize("family", ["ant_dir", "cheetah_vel", "cheetah_dir"])
def test_expert_configs_parse(family):
    cfg = ExpertTrainingConfig(**yaml.safe_load((ROOT / "conf" / "expert" / f"{family}.yaml").read_text()))
    assert cfg.family == family and cfg.total_steps >= 1_000_000


def small_config(tmp_path, total):
    cfg = yaml.safe_load((ROOT / "conf" / "expert" / "cheetah_dir.yaml").read_text())
    cfg.update(total_steps=total, n_envs=2, n_steps=64, batch_size=64, n_epochs=1, checkpoint_every=128,
               subprocess=False, work_dir=str(tmp_path / "runs"), output=str(tmp_path / "out" / "{family}.pt"))
    return ExpertTrainingConfig(**cfg)


def test_training_resumes_from_latest_checkpoint_and_exports_matching_actor(tmp_path, capsys):
    out = train_expert(small_config(tmp_path, 256))
    ckpts = tmp_path / "runs" / "cheetah_dir" / "checkpoints"
    assert _latest_checkpoint(ckpts)[0] == 256
    capsys.readouterr()
    out = train_expert(small_config(tmp_path, 384))
    log = capsys.readouterr().out
    assert "resuming cheetah_dir expert" in log and "(256 steps)" in log
    assert _latest_checkpoint(ckpts)[0] == 384
    info = json.loads(out.with_name("expert_training.json").read_text())
    assert info["steps"] == 384

    # the exported torch actor reproduces SB3's deterministic action on normalised observations
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    venv = VecNormalize.load(str(ckpts / "vecnormalize_384.pkl"), DummyVecEnv([lambda: make_conditioned_env("cheetah_dir")]))
    model = PPO.load(str(ckpts / "ppo_384.zip"), device="cpu")
    env = make_conditioned_env("cheetah_dir", task=1)
    obs = np.stack([env.reset(seed=s)[0] for s in range(4)])
    assert np.allclose(obs[:, -1], task_features("cheetah_dir", [-1.0]))
    sb3_action, _ = model.predict(venv.normalize_obs(obs), deterministic=True)
    ours = load_expert_actor(out).act(obs, deterministic=True)
    np.testing.assert_allclose(ours, np.clip(sb3_action, -1, 1), atol=1e-5)
