"""Training task-conditioned experts with stable-baselines3 PPO, resumable from checkpoints.

One PPO policy per MuJoCo family sees the task features appended to its observation and a new
random task every episode. Checkpoints (policy + VecNormalize statistics) are written every
`checkpoint_every` steps under `work_dir`; a rerun resumes from the newest one. At the end the
actor is exported (see `expert_policy.py`), and so are a few intermediate snapshots, from which
a `medium` policy is picked for the prompt-initialisation experiments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from promptdiff.data.expert_policy import export_sb3_policy


@dataclass
class ExpertTrainingConfig:
    family: str
    total_steps: int = 2_000_000
    n_envs: int = 8
    n_steps: int = 512
    batch_size: int = 2048
    n_epochs: int = 10
    learning_rate: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    log_std_init: float = -1.0
    net_arch: list[int] = field(default_factory=lambda: [256, 256])
    checkpoint_every: int = 200_000
    seed: int = 0
    work_dir: str = "runs/experts"
    output: str = "datasets/{family}/expert_policy.pt"
    subprocess: bool = True


def _make_vec_env(cfg: ExpertTrainingConfig):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    from promptdiff.data.task_conditioning import make_conditioned_env

    return make_vec_env(
        make_conditioned_env,
        n_envs=cfg.n_envs,
        seed=cfg.seed,
        env_kwargs={"family": cfg.family, "random_tasks": True},
        vec_env_cls=SubprocVecEnv if cfg.subprocess else DummyVecEnv,
    )


def _latest_checkpoint(ckpt_dir: Path) -> tuple[int, Path, Path] | None:
    found = []
    for path in ckpt_dir.glob("ppo_*.zip"):
        m = re.fullmatch(r"ppo_(\d+)\.zip", path.name)
        stats = ckpt_dir / f"vecnormalize_{m.group(1)}.pkl" if m else None
        if m and stats.is_file():
            found.append((int(m.group(1)), path, stats))
    return max(found) if found else None


def train_expert(cfg: ExpertTrainingConfig) -> Path:
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(1)
    work = Path(cfg.work_dir) / cfg.family
    ckpt_dir = work / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    venv = _make_vec_env(cfg)
    latest = _latest_checkpoint(ckpt_dir)
    if latest:
        done, model_path, stats_path = latest
        venv = VecNormalize.load(str(stats_path), venv)
        model = PPO.load(str(model_path), env=venv, device="cpu")
        print(f"resuming {cfg.family} expert from {model_path} ({done} steps)", flush=True)
    else:
        done = 0
        venv = VecNormalize(venv, norm_obs=True, norm_reward=True, gamma=cfg.gamma)
        model = PPO(
            "MlpPolicy",
            venv,
            n_steps=cfg.n_steps,
            batch_size=cfg.batch_size,
            n_epochs=cfg.n_epochs,
            learning_rate=cfg.learning_rate,
            gamma=cfg.gamma,
            gae_lambda=cfg.gae_lambda,
            policy_kwargs={"net_arch": list(cfg.net_arch), "log_std_init": cfg.log_std_init},
            seed=cfg.seed,
            device="cpu",
            verbose=0,
            tensorboard_log=str(work / "tb"),
        )
    while done < cfg.total_steps:
        chunk = min(cfg.checkpoint_every, cfg.total_steps - done)
        model.learn(chunk, reset_num_timesteps=False, progress_bar=False, tb_log_name="ppo")
        done = model.num_timesteps
        model.save(str(ckpt_dir / f"ppo_{done}.zip"))
        venv.save(str(ckpt_dir / f"vecnormalize_{done}.pkl"))
        export_sb3_policy(model, venv, work / "snapshots" / f"actor_{done}.pt")
        ep = [e["r"] for e in model.ep_info_buffer]
        mean_ep = sum(ep) / max(len(ep), 1)
        print(f"{cfg.family}: {done}/{cfg.total_steps} steps, recent episode return {mean_ep:.1f}", flush=True)
    out = Path(cfg.output.format(family=cfg.family))
    export_sb3_policy(model, venv, out)
    venv.close()
    return out


if __name__ == "__main__":  # python -m promptdiff.data.expert_training FAMILY STEPS
    import sys

    train_expert(ExpertTrainingConfig(family=sys.argv[1], total_steps=int(sys.argv[2])))
