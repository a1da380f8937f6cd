"""Mirrored views of a toy clip: the same video seen in a mirror (left and right swapped) or played backwards, with
the prompt that asks for what the view shows.

Every toy shape is symmetric under a left-right mirror (the triangle's apex points up, the bar is horizontal) and
every texture stays a texture of the world, so a mirrored clip is a clip of the world: a mirror swaps left / right
motion and the pan direction, playing backwards swaps left / right, up / down and the pan direction. A generator
sample thus gives three more samples of the same kind (same artefacts, other prompts) for free, which is how the
toy DeScore recipe multiplies its on-policy data (sampling costs 0.5-0.7 s per clip per thread). Labels of a view
are measured again by the analyzer, never carried over.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from descore.errors import ConfigError
from toyworld.prompts import parse_prompt, write_prompt
from toyworld.scene import SceneSpec

#: The views besides the original: mirrored, played backwards, both.
MIRRORS: tuple[str, ...] = ("hflip", "reverse", "hflip_reverse")

_HFLIP = {"left": "right", "right": "left", "pan_left": "pan_right", "pan_right": "pan_left"}
_REVERSE = {**_HFLIP, "up": "down", "down": "up"}


def check_views(views: Sequence[str], what: str = "mirrors") -> None:
    """Raise :class:`ConfigError` unless ``views`` are distinct views of :data:`MIRRORS` (``what`` names them)."""
    if isinstance(views, str) or not all(v in MIRRORS for v in views) or len(set(views)) != len(views):
        raise ConfigError(f"{what} must be distinct views of {', '.join(MIRRORS)}, got {views!r}")


def _check(view: str) -> tuple[bool, bool]:
    if view not in MIRRORS:
        raise ConfigError(f"unknown mirrored view {view!r}; choose from {', '.join(MIRRORS)}")
    return view.startswith("hflip"), view.endswith("reverse")


def mirror_spec(spec: SceneSpec, view: str) -> SceneSpec:
    """What ``spec`` asks for, as seen in the mirrored ``view`` (motions and pan swapped as the view swaps them)."""
    hflip, reverse = _check(view)
    maps = [m for m, on in ((_HFLIP, hflip), (_REVERSE, reverse)) if on]

    def swap(value: str) -> str:
        for mapping in maps:  # both views: left/right and the pan swap twice (back), up/down once
            value = mapping.get(value, value)
        return value

    objects = tuple(replace(o, motion=swap(o.motion)) for o in spec.objects)
    camera = swap(spec.camera) if spec.camera is not None else None
    return replace(spec, objects=objects, camera=camera)


def mirror_prompt(prompt: str, view: str, rng: np.random.Generator) -> str:
    """A prompt (phrased afresh with ``rng``) asking for what ``prompt`` asks for, as seen in ``view``."""
    return write_prompt(mirror_spec(parse_prompt(prompt), view), rng)


def mirror_frames(frames: torch.Tensor, view: str) -> torch.Tensor:
    """The ``view`` of a (T, C, H, W) clip: width reversed for a mirror, time reversed for playing backwards."""
    hflip, reverse = _check(view)
    if frames.ndim != 4:
        raise ConfigError(f"mirror_frames needs (T, C, H, W) frames, got shape {tuple(frames.shape)}")
    dims = [d for d, on in ((0, reverse), (3, hflip)) if on]
    return frames.flip(dims)


__all__ = ["MIRRORS", "check_views", "mirror_frames", "mirror_prompt", "mirror_spec"]
