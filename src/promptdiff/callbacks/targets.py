"""Which tasks and prompts the callbacks evaluate, decided in one place for all of them.

Every callback (rollouts, the denoising chain, the prompt map, the video) evaluates the module's
`rollout_tasks` (a prompt-tuning method's tuned tasks: the test tasks, or the validation tasks under
`split: val`; the PLM's test tasks in pre-training), with the prompt sets of the method contract
(`rollout_prompt_sets`, see `promptdiff.methods.frozen_plm`), and drives `rollout_policy(task)` for
methods whose network differs per task.
"""

from __future__ import annotations

import lightning as L


def rollout_tasks(module: L.LightningModule) -> list[int]:
    """The tasks every callback evaluates."""
    return list(module.rollout_tasks)


def prompt_sets(module: L.LightningModule, datamodule, tasks: list[int], seed: int,
                only: str | None = None) -> dict[str, dict]:  # fmt: skip
    """{set name: {task: prompt}} of the module for `tasks`; `only` keeps one set (KeyError naming the sets)."""
    was_training = module.training
    try:
        sets = module.rollout_prompt_sets(datamodule, list(tasks), seed)
    finally:
        module.train(was_training)
    if module.primary_set not in sets:
        raise KeyError(f"{type(module).__name__}.rollout_prompt_sets returned {sorted(sets)}, without its "
                       f"primary_set {module.primary_set!r}")  # fmt: skip
    if only is not None:
        if only not in sets:
            raise KeyError(f"{type(module).__name__} has no prompt set {only!r} (it has {sorted(sets)})")
        sets = {only: sets[only]}
    return sets


def policy(module: L.LightningModule, task: int | None = None):
    """The policy that plays `task` (one policy for all tasks unless the module's network differs per task)."""
    return module.rollout_policy(task) if getattr(module, "policy_per_task", False) else module.rollout_policy()


def is_prompt_tuning(module: L.LightningModule) -> bool:
    """A prompt-tuning method (its summary names the primary set and tuned parameters), not pre-training."""
    from promptdiff.methods.frozen_plm import PromptTuningMethod

    return isinstance(module, PromptTuningMethod)
