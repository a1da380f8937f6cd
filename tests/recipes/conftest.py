"""Shared fixtures for the recipes tests: tiny pipelines of every family at 32x32, 9 frames, 3 steps."""

from __future__ import annotations

import pytest

from recipes.families import SamplingSpec
from toyworld.tiny_models.video_pipelines import (
    PIPELINE_CALL_DEFAULTS,
    PIPELINE_FAMILIES,
    build_video_pipeline,
)

FAMILIES = list(PIPELINE_FAMILIES)
PROMPTS = ["a red circle moving left", "a blue square on a gray background"]


def tiny_spec(family: str, **changes) -> SamplingSpec:
    """The tiny pipeline's default call as a SamplingSpec."""
    return SamplingSpec(**{**PIPELINE_CALL_DEFAULTS[family], **changes})


@pytest.fixture
def make_pipeline():
    """A fresh tiny pipeline of a family (fresh, because tests add adapters to them)."""
    return lambda family, seed=0: build_video_pipeline(family, seed)
