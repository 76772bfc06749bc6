"""Lightning callbacks: scheduled rollouts of the policy and logging to TensorBoard."""

from promptdiff.callbacks.rollout import RolloutCallback

__all__ = ["RolloutCallback"]
