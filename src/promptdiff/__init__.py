"""promptdiff: prompt tuning of pre-trained decision policies with diffusion-generated prompts."""

__version__ = "0.1.0"
