"""Shared fixtures: tiny real pipelines of every family and a tiny random DeScore that can read their 9-frame clips."""

from __future__ import annotations

import functools

import pytest
import torch

from descore.scoring import DeScore
from toyworld.tiny_models import (
    PIPELINE_CALL_DEFAULTS,
    PIPELINE_FAMILIES,
    build_qwen_vl,
    build_qwen_vl_processor,
)
from toyworld.tiny_models import build_video_pipeline as _build

PROMPT = "a red ball rolls to the left"

# The tiny pipelines make 9 frames at 16 fps (0.56 s): DeScore must sample faster than its usual 2 fps to get >= 2.
SAMPLING = {"fps": 8.0, "min_frames": 2, "max_frames": 16, "min_pixels": 32 * 32, "max_pixels": 64 * 64}


def make_scorer(seed: int = 0, **sampling) -> DeScore:
    """The same tiny random DeScore in every process (its reward head is drawn from torch's global RNG)."""
    backbone = build_qwen_vl("qwen3_vl", "tiny", seed=seed)
    processor = build_qwen_vl_processor("qwen3_vl", "tiny")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DeScore.from_backbone(
            backbone,
            processor,
            sampling={**SAMPLING, **sampling},
            generation={"max_new_tokens": 8, "repetition_penalty": 1.05},
        )


@pytest.fixture(scope="session")
def scorer() -> DeScore:
    return make_scorer()


@functools.cache
def pipeline(family: str):
    """One tiny pipeline per family for the session (calls do not change its weights or configuration)."""
    return _build(family, seed=0)


@functools.cache
def smooth_pipeline(family: str):
    """Tiny pipelines whose decoders are smooth enough for gradient ascent to show.

    The default tiny Wan VAE (base_dim 3) RMS-normalises near-zero 3-channel features, so its output jumps under
    latent changes of 1e-3 and finite differences disagree with autograd; with 8 base channels it is smooth (checked
    in test_guidance). The other families' tiny VAEs are smooth as they are.
    """
    if not family.startswith("wan"):
        return pipeline(family)
    pipe = _build(family, seed=0, overrides={"vae": {"base_dim": 8}})
    return pipe


def call_kwargs(family: str, **changes) -> dict:
    return {**PIPELINE_CALL_DEFAULTS[family], **changes}


def generate(pipe, family: str, seed: int, prompt: str = PROMPT, **kwargs) -> torch.Tensor:
    """(B, F, C, H, W) frames in [0, 1] of one seeded call."""
    options = {"output_type": "pt", **call_kwargs(family), **kwargs}
    return pipe(prompt, generator=torch.Generator().manual_seed(seed), **options).frames


FAMILIES = list(PIPELINE_FAMILIES)
