"""`DeScoreConfig`: everything a DeScore checkpoint needs besides weights, stored as `descore_config.json`.

The sampling settings (fps, frame and pixel budgets), the judge template and the generation defaults are part of the
checkpoint because a reward model is only valid under the settings it was trained with: scoring applies them by
default, and a caller who overrides them is warned.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from descore.errors import ConfigError, check_positive

CONFIG_NAME = "descore_config.json"
SUPPORTED_FAMILIES = ("qwen3_vl", "qwen3_vl_moe", "qwen2_5_vl", "qwen2_vl")
DEFAULT_QUERY_TOKEN = "<|reward|>"


def _from_dict(cls, data: dict[str, Any], where: str):
    """Build a config dataclass from a dict, rejecting unknown keys (a typo must not silently become a default)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    return cls(**data)


@dataclass
class SamplingConfig:
    """How a video is sampled before the backbone sees it (the reference trains at 2 fps, <= 448x448 per frame)."""

    fps: float = 2.0
    """Frames per second sampled from the source video."""
    min_frames: int = 2
    """Fewest frames a video may yield; shorter videos are rejected with a clear message."""
    max_frames: int = 64
    """Most frames sampled; longer videos are sampled uniformly at a lower rate."""
    min_pixels: int = 3136
    """Smallest frame area (pixels) after resizing."""
    max_pixels: int = 200704
    """Largest frame area (pixels) after resizing (448 x 448)."""

    def validate(self) -> None:
        check_positive("sampling.fps", self.fps)
        if not 1 <= self.min_frames <= self.max_frames:
            raise ConfigError(
                f"sampling needs 1 <= min_frames <= max_frames, got min_frames={self.min_frames}, "
                f"max_frames={self.max_frames}"
            )
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ConfigError(
                f"sampling needs 0 < min_pixels <= max_pixels, got {self.min_pixels} and {self.max_pixels}"
            )


@dataclass
class GenerationDefaults:
    """Decoding settings for the chain of thought (greedy by default, as in the reference inference)."""

    max_new_tokens: int = 4096
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    repetition_penalty: float = 1.05

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"generation.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.repetition_penalty <= 0 or self.temperature <= 0:
            raise ConfigError("generation.repetition_penalty and generation.temperature must be > 0")


@dataclass
class DeScoreConfig:
    """Configuration of a DeScore reward model (backbone + query token + regression head + scoring settings)."""

    backbone: str = "Qwen/Qwen3-VL-8B-Instruct"
    """Model id or path of the base Qwen-VL backbone the model was built from (provenance, and the base for adapters)."""
    family: str = "qwen3_vl"
    """Backbone family: one of qwen3_vl, qwen3_vl_moe, qwen2_5_vl, qwen2_vl."""
    query_token: str = DEFAULT_QUERY_TOKEN
    """The learnable token whose final hidden state the head reads."""
    dimensions: list[str] = field(default_factory=lambda: ["overall"])
    """Names of the head outputs; the first is the reward. One scalar by default."""
    hidden_size: int = 4096
    """Hidden size of the backbone's language model (the head's input size)."""
    template: str = "video_text_alignment_judge"
    """Name of the judge template (see descore.templates)."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    generation: GenerationDefaults = field(default_factory=GenerationDefaults)
    reward_mean: float | None = None
    """Optional normalisation: rewards are returned as (raw - reward_mean) / reward_std when both are set."""
    reward_std: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.sampling, dict):
            self.sampling = _from_dict(SamplingConfig, self.sampling, "sampling")
        if isinstance(self.generation, dict):
            self.generation = _from_dict(GenerationDefaults, self.generation, "generation")
        self.validate()

    def validate(self) -> None:
        from descore.templates import TEMPLATES

        if self.family not in SUPPORTED_FAMILIES:
            raise ConfigError(f"family must be one of {SUPPORTED_FAMILIES}, got {self.family!r}")
        if not self.query_token or self.query_token.strip() != self.query_token:
            raise ConfigError(
                f"query_token must be a non-empty string without surrounding spaces, got {self.query_token!r}"
            )
        if not self.dimensions or len(set(self.dimensions)) != len(self.dimensions):
            raise ConfigError(f"dimensions must be a non-empty list of distinct names, got {self.dimensions}")
        if self.hidden_size < 1:
            raise ConfigError(f"hidden_size must be >= 1, got {self.hidden_size}")
        if self.template not in TEMPLATES:
            raise ConfigError(f"unknown template {self.template!r}; known: {sorted(TEMPLATES)}")
        if (self.reward_mean is None) != (self.reward_std is None):
            raise ConfigError("reward_mean and reward_std must be set together")
        if self.reward_std is not None and not self.reward_std > 0:
            raise ConfigError(f"reward_std must be > 0, got {self.reward_std}")
        self.sampling.validate()
        self.generation.validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "DeScoreConfig") -> DeScoreConfig:
        try:
            return _from_dict(cls, data, where)
        except TypeError as err:  # e.g. a nested value of the wrong type
            raise ConfigError(f"{where}: {err}") from err

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> DeScoreConfig:
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise ConfigError(f"{path}: not found; a DeScore checkpoint needs {CONFIG_NAME}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: invalid JSON ({err})") from err
        return cls.from_dict(data, where=str(path))
