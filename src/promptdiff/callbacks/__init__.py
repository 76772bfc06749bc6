"""Lightning callbacks: checkpoints that keep the final step, scheduled rollouts of the policy,
figures and videos, logging to TensorBoard."""

from promptdiff.callbacks.checkpoint import ModelCheckpoint
from promptdiff.callbacks.figures import DenoisingChainCallback, PromptSpaceCallback
from promptdiff.callbacks.rollout import RolloutCallback
from promptdiff.callbacks.video import RolloutVideoCallback

__all__ = ["DenoisingChainCallback", "ModelCheckpoint", "PromptSpaceCallback", "RolloutCallback", "RolloutVideoCallback"]
