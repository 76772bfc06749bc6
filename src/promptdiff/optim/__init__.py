"""Optimisation helpers that know nothing of Lightning: gradient projection (Prompt Diffuser) and the
zeroth-order rank optimiser (Prompt-Tuning DT)."""

from promptdiff.optim.projection import MODES, combine_gradients, project_conflicting
from promptdiff.optim.rank import RankOptimiser, centred_rank_weights

__all__ = ["MODES", "RankOptimiser", "centred_rank_weights", "combine_gradients", "project_conflicting"]
