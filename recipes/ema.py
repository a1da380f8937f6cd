"""An exponential moving average of the LoRA weights, swapped in for sampling and for the final adapter."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


class LoraEMA(nn.Module):
    """``shadow <- decay * shadow + (1 - decay) * weight`` after every optimizer step.

    The shadow weights are registered as parameters (never given to the optimizer, never part of a graph) so that
    training checkpoints, which keep every parameter with ``requires_grad``, keep them too.
    """

    def __init__(self, params: Sequence[nn.Parameter], decay: float):
        super().__init__()
        self.decay = float(decay)
        self.shadow = nn.ParameterList([nn.Parameter(p.detach().clone().float()) for p in params])

    @torch.no_grad()
    def step(self, params: Sequence[nn.Parameter]) -> None:
        for shadow, param in zip(self.shadow, params, strict=True):
            shadow.lerp_(param.detach().float(), 1.0 - self.decay)

    @contextmanager
    def swapped_in(self, params: Sequence[nn.Parameter]) -> Iterator[None]:
        """Inside the block the model carries the averaged weights; the trained ones come back after it."""
        backup = [p.detach().clone() for p in params]
        with torch.no_grad():
            for shadow, param in zip(self.shadow, params, strict=True):
                param.copy_(shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                for saved, param in zip(backup, params, strict=True):
                    param.copy_(saved)
