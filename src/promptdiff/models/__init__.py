"""Plain nn.Modules: the Prompt Decision Transformer and the prompt interface every method uses."""

from promptdiff.models.prompt import ACTION_PAD, Prompt

__all__ = ["ACTION_PAD", "Prompt"]
