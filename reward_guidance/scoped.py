"""Temporary module settings for one reward-gradient computation, each restored on exit.

Guidance borrows the user's modules (transformer, VAE, reward model) for a backward pass and must leave them as it
found them: parameters frozen only while the graph is built (a parameter that requires grad makes autograd keep
activations that a gradient with respect to the latents never needs), gradient checkpointing switched on only for
the guided step, and VAE slicing/tiling set only for the decode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch


@contextlib.contextmanager
def frozen(modules: Iterable[torch.nn.Module | None]) -> Iterator[None]:
    """Parameters of ``modules`` do not require grad inside the block; their previous flags come back after."""
    changed: list[torch.nn.Parameter] = []
    try:
        for module in modules:
            if module is None:
                continue
            for parameter in module.parameters():
                if parameter.requires_grad:
                    parameter.requires_grad_(False)
                    changed.append(parameter)
        yield
    finally:
        for parameter in changed:
            parameter.requires_grad_(True)


@contextlib.contextmanager
def gradient_checkpointing(modules: Iterable[torch.nn.Module | None], enabled: bool = True) -> Iterator[None]:
    """diffusers gradient checkpointing on ``modules`` that support it, for the duration of the block.

    Modules without support (the Wan VAE) are left alone. diffusers checkpoints whenever grad is enabled, in eval mode
    too, so this trades one recomputation of each block's forward for not storing its activations.
    """
    switched: list[Any] = []
    try:
        if enabled:
            for module in modules:
                if (
                    module is not None
                    and getattr(module, "_supports_gradient_checkpointing", False)
                    and not module.is_gradient_checkpointing
                ):
                    module.enable_gradient_checkpointing()
                    switched.append(module)
        yield
    finally:
        for module in switched:
            module.disable_gradient_checkpointing()


@contextlib.contextmanager
def vae_memory(
    vae: torch.nn.Module, slicing: bool | None = None, tiling: bool | dict[str, Any] | None = None
) -> Iterator[None]:
    """Set a diffusers video VAE's slicing (one video of the batch at a time) and tiling (spatial tiles) for the block.

    ``None`` keeps the VAE's current setting; ``tiling`` may be a dict of ``enable_tiling`` keyword arguments (tile
    sizes and strides, whose names differ per VAE).
    """
    before = {
        k: v for k, v in vars(vae).items() if k in ("use_slicing", "use_tiling") or k.startswith("tile_")
    }
    try:
        if slicing is not None:
            vae.enable_slicing() if slicing else vae.disable_slicing()
        if tiling is not None:
            if tiling is False:
                vae.disable_tiling()
            else:
                vae.enable_tiling(**(tiling if isinstance(tiling, dict) else {}))
        yield
    finally:
        for name, value in before.items():
            setattr(vae, name, value)
