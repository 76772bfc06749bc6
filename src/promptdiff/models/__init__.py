"""Plain nn.Modules: the Prompt Decision Transformer and the prompt interface every method uses."""

from promptdiff.models.prompt import ACTION_PAD, Prompt, PromptTokens
from promptdiff.models.prompt_codec import PromptCodec

__all__ = ["ACTION_PAD", "Prompt", "PromptCodec", "PromptTokens"]

from promptdiff.models.denoiser import (  # noqa: E402
    MLPDenoiser, PromptDenoiser, ReturnTimestepEncoder, SinusoidalEmbedding)
from promptdiff.models.diffusion import GaussianDiffusion  # noqa: E402

__all__ += ["GaussianDiffusion", "SinusoidalEmbedding", "ReturnTimestepEncoder", "MLPDenoiser", "PromptDenoiser"]
