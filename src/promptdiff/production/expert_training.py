"""Training task-conditioned experts with stable-baselines3 PPO, resumable from checkpoints.

One PPO policy per MuJoCo family sees the task features appended to its observation and a new
random task every episode. Checkpoints (policy + VecNormalize statistics) are written every
`checkpoint_every` steps under `work_dir`; a rerun resumes from the newest one. At the end the
actor is exported (see `expert_policy.py`), and so are a few intermediate snapshots, from which
a `medium` policy is picked for the prompt-initialisation experiments.
"""

from __future__ import annotations

import functools
import json
import platform
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from promptdiff.production.expert_policy import export_sb3_policy
from promptdiff.threads import in_worker


@dataclass
class ExpertTrainingConfig:
    family: str
    """Task family with a learned expert: cheetah_dir, cheetah_vel or ant_dir."""
    total_steps: int = 2_000_000
    """Environment steps to train for (a resumed run counts the steps already done)."""
    n_envs: int = 8
    """Parallel environments (subprocesses)."""
    n_steps: int = 512
    """PPO rollout length per environment."""
    batch_size: int = 2048
    """PPO minibatch size."""
    n_epochs: int = 10
    """PPO epochs per rollout."""
    learning_rate: float = 3e-4
    """Adam learning rate."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    log_std_init: float = -1.0
    """Initial log standard deviation of the Gaussian policy."""
    net_arch: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden sizes of the policy and value MLPs."""
    checkpoint_every: int = 200_000
    """Steps between checkpoints (and exported snapshots)."""
    seed: int = 0
    """Training seed."""
    work_dir: str = "runs/experts"
    """Checkpoints, snapshots and TensorBoard logs go to <work_dir>/<family>/."""
    output: str = "datasets/{family}/expert_policy.pt"
    """Where the final actor is exported."""
    subprocess: bool = True
    """Run the environments in subprocesses (SubprocVecEnv) instead of in-process."""
    medium_output: str | None = None
    """If set, also export the snapshot closest to half the expert's return here."""


def _make_vec_env(cfg: ExpertTrainingConfig):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    from promptdiff.production.task_conditioning import make_conditioned_env

    return make_vec_env(
        functools.partial(in_worker, make_conditioned_env),  # in a SubprocVecEnv worker: one thread
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
    progress_file = work / "progress.json"
    progress = json.loads(progress_file.read_text()) if progress_file.exists() else {"wall_time_s": 0.0}
    while done < cfg.total_steps:
        chunk = min(cfg.checkpoint_every, cfg.total_steps - done)
        tic = time.time()
        model.learn(chunk, reset_num_timesteps=False, progress_bar=False, tb_log_name="ppo")
        progress["wall_time_s"] += time.time() - tic
        done = model.num_timesteps
        model.save(str(ckpt_dir / f"ppo_{done}.zip"))
        venv.save(str(ckpt_dir / f"vecnormalize_{done}.pkl"))
        export_sb3_policy(model, venv, work / "snapshots" / f"actor_{done}.pt")
        ep = [e["r"] for e in model.ep_info_buffer]
        mean_ep = sum(ep) / max(len(ep), 1)
        progress.update(steps=done, recent_return=mean_ep)
        progress_file.write_text(json.dumps(progress))
        print(f"{cfg.family}: {done}/{cfg.total_steps} steps, recent episode return {mean_ep:.1f}", flush=True)
    out = Path(cfg.output.format(family=cfg.family))
    export_sb3_policy(model, venv, out)
    venv.close()
    summary = {
        "command": f"promptdiff expert train --config conf/expert/{cfg.family}.yaml",
        "summary": (f"stable-baselines3 PPO, {done} env steps, {progress['wall_time_s'] / 60:.0f} min on "
                    f"{platform.machine()} with {cfg.n_envs} envs; recent training-episode return "
                    f"{progress['recent_return']:.1f} (random tasks, sampled actions)."),
        "steps": done,
        "wall_time_s": round(progress["wall_time_s"], 1),
        "config": asdict(cfg),
    }
    if cfg.medium_output:
        medium = select_medium_policy(cfg.family, work / "snapshots", Path(cfg.medium_output.format(family=cfg.family)), out)
        summary["medium"] = medium
    out.with_name("expert_training.json").write_text(json.dumps(summary, indent=1) + "\n")
    return out


def _mean_return(family: str, actor_path: Path | None, episodes_per_task: int = 1) -> float:
    """Mean return over all tasks (deterministic actor; None: uniform random actions)."""
    import numpy as np

    from promptdiff.production.collect import rollout_batch
    from promptdiff.production.experts import LearnedExpert, RandomPolicy
    from promptdiff.envs import get_family

    fam = get_family(family)
    policy = RandomPolicy() if actor_path is None else LearnedExpert(fam, actor_path)
    tasks = [t for t in range(fam.num_tasks) for _ in range(episodes_per_task)]
    seeds = [31_337 + i for i in range(len(tasks))]
    trajs = rollout_batch(fam, tasks, seeds, policy, np.random.default_rng(0))
    return float(np.mean([t.episode_return for t in trajs]))


def select_medium_policy(family: str, snapshots: Path, out: Path, expert: Path) -> dict:
    """Pick the training snapshot whose mean return is closest to halfway from random to expert."""
    import shutil

    rand, best = _mean_return(family, None), _mean_return(family, expert)
    target = rand + 0.5 * (best - rand)
    scored = []
    for snap in sorted(snapshots.glob("actor_*.pt"), key=lambda p: int(p.stem.split("_")[1])):
        scored.append((abs(_mean_return(family, snap) - target), snap))
    _, chosen = min(scored)
    chosen_return = _mean_return(family, chosen)
    shutil.copyfile(chosen, out)
    print(f"medium policy: {chosen.name}, return {chosen_return:.1f} (random {rand:.1f}, expert {best:.1f})")
    return {"snapshot": chosen.name, "return": chosen_return, "random_return": rand,
            "expert_return": best, "target": target}

