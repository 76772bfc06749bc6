"""Optimisation helpers that know nothing of Lightning: gradient projection (Prompt Diffuser)."""

from promptdiff.optim.projection import MODES, combine_gradients, project_conflicting

__all__ = ["MODES", "combine_gradients", "project_conflicting"]
