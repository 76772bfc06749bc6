"""Rollout throughput: how close the batched evaluator comes to the bare simulator.

    python benchmarks/rollout_throughput.py [--family ant_dir] [--episodes 20] [--device cpu]
                                            [--vectorization sync] [--threads N] [--compile]
                                            [--precision 32|bf16]

For the family's test tasks x `episodes` environments (ant_dir: 5 x 20 = 100 envs, 200 steps):

  (i)   raw simulator: the same vector env (same sub-environments, same autoreset mode) driven by
        uniform random actions for `horizon` vector steps, counting every sub-environment step;
        timed with and without building and resetting the vector env;
  (ii)  evaluator: `promptdiff.rollout.evaluate` with a randomly initialised reference-size
        PromptDT (width 128, 3 layers, K 20, prompt length 5), env steps of the evaluated
        episodes per second of its wall time (which includes building the envs), and the share
        of that time spent inside the policy;
  (iii) their ratio.

With --compile the policy's step runs through `torch.compile` (`DTPolicy(compile=True)`); the
compilation happens inside the evaluator's wall time, as it would in a real evaluation. With
--precision bf16 the policy's steps run under bfloat16 autocast (`DTPolicy(precision="bf16")`:
on GPUs, and on CPUs with bfloat16 matrix units such as AMX).

Needs no datasets (normalised scores are then None). A random PromptDT outputs small actions,
so the ant does not fall and every episode runs the full horizon.
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np
import torch

from promptdiff.envs import get_family
from promptdiff.prompt import Prompt
from promptdiff.models.prompt_dt import PromptDT
from promptdiff.rollout import DTPolicy, evaluate
from promptdiff.units import PLMUnits
from promptdiff.rollout.evaluator import _vector_env


class TimedPolicy:
    """Delegates to a DTPolicy and accumulates the seconds spent in act() and record()."""

    def __init__(self, policy: DTPolicy):
        self.policy, self.seconds, self.calls = policy, 0.0, 0

    def reset(self, *args, **kwargs):
        return self.policy.reset(*args, **kwargs)

    def act(self, obs, active):
        start = time.perf_counter()
        out = self.policy.act(obs, active)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out

    def record(self, rewards, active):
        start = time.perf_counter()
        self.policy.record(rewards, active)
        self.seconds += time.perf_counter() - start


def raw_throughput(fam, tasks: list[int], vectorization: str, seed: int) -> dict:
    start = time.perf_counter()
    envs = _vector_env(fam, tasks, vectorization)
    envs.reset(seed=seed)
    envs.action_space.seed(seed)
    step_start = time.perf_counter()
    steps = 0
    for _ in range(fam.horizon):
        envs.step(envs.action_space.sample())
        steps += envs.num_envs
    end = time.perf_counter()
    envs.close()
    return {"steps": steps, "total_s": end - start, "step_s": end - step_start}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="ant_dir")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per test task")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--vectorization", choices=["sync", "async"], default="sync")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true", help="compile the policy's step (torch.compile)")
    parser.add_argument("--precision", choices=["32", "bf16"], default="32", help="the policy's precision")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    fam = get_family(args.family)
    tasks = list(fam.test_tasks)
    n = len(tasks) * args.episodes
    print(f"{fam.name}: {len(tasks)} test tasks x {args.episodes} episodes = {n} envs, horizon {fam.horizon}, "
          f"{args.vectorization} vector env; torch {torch.__version__} on {args.device} "
          f"({torch.get_num_threads()} threads), {platform.machine()}")  # fmt: skip

    raw = raw_throughput(fam, [t for t in tasks for _ in range(args.episodes)], args.vectorization, args.seed)
    raw_sps = raw["steps"] / raw["total_s"]
    print(f"(i)   raw simulator, random actions: {raw['steps']} env steps in {raw['total_s']:.2f} s "
          f"(stepping alone {raw['step_s']:.2f} s): {raw_sps:,.0f} env steps/s "
          f"({raw['steps'] / raw['step_s']:,.0f} stepping alone)")  # fmt: skip

    torch.manual_seed(args.seed)
    model = PromptDT(fam.obs_dim, fam.act_dim, width=128, layers=3, context_length=20, prompt_length=5,
                     max_timestep=max(1000, fam.horizon))  # fmt: skip
    g = torch.Generator().manual_seed(args.seed)
    L = model.prompt_length
    prompts = {t: Prompt(torch.randn(1, L, fam.obs_dim, generator=g),
                         torch.rand(1, L, fam.act_dim, generator=g) * 2 - 1,
                         torch.randn(1, L, 1, generator=g), torch.arange(L)[None], torch.ones(1, L))
               for t in tasks}  # fmt: skip
    units = PLMUnits(np.zeros(fam.obs_dim), np.ones(fam.obs_dim), fam.rtg_scale, fam.horizon, context_length=20)
    dt_policy = DTPolicy(model, units, device=args.device, compile=args.compile, precision=args.precision)
    policy = TimedPolicy(dt_policy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no dataset card on a fresh machine
        res = evaluate(policy, fam, tasks, prompts, args.episodes, seed=args.seed, vectorization=args.vectorization)
    sps = res["env_steps"] / res["wall_time_s"]
    how = ", ".join([*(["compiled"] if args.compile else []), *(["bf16"] if args.precision == "bf16" else [])])
    print(f"(ii)  evaluator{f' ({how})' if how else ''}, PromptDT width 128 x 3 layers, K 20, prompt 5: {res['env_steps']} env steps in "
          f"{res['wall_time_s']:.2f} s: {sps:,.0f} env steps/s; {res['policy_calls']} batched policy calls, "
          f"{1000 * policy.seconds / max(policy.calls, 1):.1f} ms each "
          f"({100 * policy.seconds / res['wall_time_s']:.0f}% of the wall time); mean return {res['return_mean']:.1f}, "
          f"normalised score {res['score_mean']}")  # fmt: skip
    print(f"(iii) evaluator / raw simulator throughput: {sps / raw_sps:.2f} "
          f"({sps / (raw['steps'] / raw['step_s']):.2f} against stepping alone)")


if __name__ == "__main__":
    main()
