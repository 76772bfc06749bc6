"""Rollout layer: a batched decision-transformer policy and the evaluator (no Lightning here).

    policy = DTPolicy(model, units)          # units: the PLM's PLMUnits (plm_module.units)
    result = evaluate(policy, "ant_dir", tasks, prompts, episodes=5)
"""

from promptdiff.rollout.dt_policy import DTPolicy
from promptdiff.rollout.evaluator import episode_seed, evaluate, evaluate_sequential
from promptdiff.rollout.video import RenderingUnavailable, render_episode

__all__ = ["DTPolicy", "RenderingUnavailable", "episode_seed", "evaluate", "evaluate_sequential", "render_episode"]
