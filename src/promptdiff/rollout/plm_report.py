"""How well a pre-trained policy uses its prompt: expert prompt of the task vs another task's.

`prompt_report` evaluates the policy on every test task with an expert prompt from that task's
prompt pool, and again with the prompt of a different task (by default the task half-way around
the family's task list), over several prompt seeds. A policy that reads its prompt scores high
with the first and clearly lower with the second.
"""

from __future__ import annotations

import numpy as np

from promptdiff.rollout.dt_policy import DTPolicy
from promptdiff.rollout.evaluator import evaluate


def prompt_report(policy: DTPolicy, family, expert_prompts, seeds=(0, 1, 2), episodes: int = 20,
                  card_root: str = "datasets", other_of: dict[int, int] | None = None) -> dict:  # fmt: skip
    """expert_prompts(tasks, seed) -> {task: Prompt}; returns scores per seed and their means.

    other_of: test task -> the task whose prompt is the "wrong" one (default: half-way around the
    task list; families whose data hold only some tasks pass another mapping).
    """
    tasks = list(family.test_tasks)
    if other_of is None:
        other_of = {t: (t + family.num_tasks // 2) % family.num_tasks for t in tasks}
    others = [other_of[t] for t in tasks]
    runs = []
    for seed in seeds:
        own = evaluate(policy, family, tasks, expert_prompts(tasks, seed), episodes, seed=seed, card_root=card_root)
        theirs = expert_prompts(others, seed)
        wrong = evaluate(policy, family, tasks, {t: theirs[o] for t, o in zip(tasks, others)}, episodes, seed=seed,
                         card_root=card_root)  # fmt: skip
        runs.append({
            "seed": seed,
            "expert_prompt": {"return_mean": own["return_mean"], "score_mean": own["score_mean"],
                              "per_task_score": {t: v["normalised_score"] for t, v in own["tasks"].items()},
                              "success_mean": own.get("success_mean")},
            "other_task_prompt": {"return_mean": wrong["return_mean"], "score_mean": wrong["score_mean"]},
        })  # fmt: skip
    mean = lambda key: float(np.mean([r[key]["score_mean"] for r in runs]))  # noqa: E731
    return {"family": family.name, "episodes_per_task": episodes, "prompt_seeds": list(seeds),
            "other_task_of": dict(zip(tasks, others)), "expert_prompt_score": mean("expert_prompt"),
            "other_task_prompt_score": mean("other_task_prompt"), "runs": runs}  # fmt: skip
