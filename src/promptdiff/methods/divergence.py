"""Stopping a run whose loss is no longer a number.

A NaN or inf loss (a learning rate far too high, non-finite data) would otherwise train on, write
all-NaN checkpoints and exit 0. Every method checks its loss with `stop_if_not_finite`, which raises
`NonFiniteLossError` naming the loss and the step; the command line prints it as one line and exits
non-zero. The checkpoint written before the step stays as it was.
"""

from __future__ import annotations

import torch


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or inf; training stops before the next checkpoint."""


def stop_if_not_finite(value: torch.Tensor, name: str, step: int, hint: str = "lower model.init_args.lr") -> None:
    """Raise `NonFiniteLossError` when the scalar `value` is NaN or inf."""
    if not torch.isfinite(value):
        raise NonFiniteLossError(f"{name} is {value.item()} at step {step}: training stopped before the next "
                                 f"checkpoint ({hint}, or check the data)")  # fmt: skip
