"""LightningModules: pre-training of the PLM and, on top of it, every prompt-tuning method."""

from promptdiff.methods.pretrain import PromptDTPretrain

__all__ = ["PromptDTPretrain"]
