"""LightningModules: pre-training of the PLM and, on top of it, every prompt-tuning method."""

from promptdiff.methods.baselines import (MTORL, Adaptor, FullDataBound, GradientTuner, PromptDTExpert, PromptDTFinetune,
                                         PromptTuningDT, SoftPrompt)
from promptdiff.methods.frozen_plm import PromptTuningMethod
from promptdiff.methods.pretrain import PromptDTPretrain
from promptdiff.methods.prompt_diffuser import PromptDiffuser

__all__ = ["MTORL", "Adaptor", "FullDataBound", "GradientTuner", "PromptDTExpert", "PromptDTFinetune", "PromptDTPretrain",
           "PromptDiffuser", "PromptTuningDT", "PromptTuningMethod", "SoftPrompt"]
