"""Lightning callbacks: scheduled rollouts of the policy, figures, logging to TensorBoard."""

from promptdiff.callbacks.figures import DenoisingChainCallback
from promptdiff.callbacks.rollout import RolloutCallback

__all__ = ["DenoisingChainCallback", "RolloutCallback"]
