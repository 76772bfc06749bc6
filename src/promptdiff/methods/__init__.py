"""LightningModules: pre-training of the PLM and, on top of it, every prompt-tuning method."""

from promptdiff.methods.baselines import Adaptor, PromptDTEval, PromptDTFinetune, PromptTuningDT, SoftPrompt
from promptdiff.methods.pretrain import PromptDTPretrain
from promptdiff.methods.prompt_diffuser import PromptDiffuser

__all__ = ["Adaptor", "PromptDTEval", "PromptDTFinetune", "PromptDTPretrain", "PromptDiffuser", "PromptTuningDT",
           "SoftPrompt"]
