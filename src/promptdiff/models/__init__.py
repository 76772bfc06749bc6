"""Plain nn.Modules: the Prompt Decision Transformer and the prompt interface every method uses."""

from promptdiff.prompt import Prompt, PromptTokens
from promptdiff.units import ACTION_PAD
from promptdiff.models.prompt_codec import PromptCodec

__all__ = ["ACTION_PAD", "Prompt", "PromptCodec", "PromptTokens"]

from promptdiff.models.denoiser import (  # noqa: E402
    MLPDenoiser, PromptDenoiser, ReturnTimestepEncoder, SinusoidalEmbedding)
from promptdiff.models.diffusion import GaussianDiffusion  # noqa: E402
from promptdiff.models.transformer_denoiser import TransformerDenoiser  # noqa: E402

__all__ += ["GaussianDiffusion", "SinusoidalEmbedding", "ReturnTimestepEncoder", "MLPDenoiser", "PromptDenoiser",
            "TransformerDenoiser"]
