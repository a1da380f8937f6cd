"""Rollout rewards of stage 2 (dual-objective RL): how good is one generated chain of thought?

The reference recipe scores every sampled CoT with ``0.7 * R_quality + 0.1 * R_format + 0.2 * R_length``:

* ``R_quality``: agreement of the five sub-scores in the CoT's answer block with the video's ground-truth sub-scores
  (``quality_rule="exact"``: the share of dimensions that match exactly, N/A included; ``"distance"``: partial credit
  ``1 - |predicted - true| / 2`` per dimension, 0 where exactly one of the two is N/A). 0 without a valid answer.
* ``R_format``: 1 when the answer block parses and carries all ``dimensional_scores`` (:func:`descore.answer.parse_answer`),
  else 0.
* ``R_length``: a function of the CoT's length, in characters or tokens. The reference code uses a step function of
  characters (at least 500 / 1000 / 1500 / 2000 characters -> 0.2 / 0.4 / 0.6 / 1.0, below 500 -> 0); the project
  page describes a linear ramp of tokens from 500 to 2000. Both are available (``length_shape`` "step" or
  "linear"), with configurable thresholds, because the right scale depends on the model: a toy model's CoTs are a few
  hundred characters.

Everything here is a pure function of the text, so rewards are reproducible and unit-testable.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from descore.answer import DIMENSIONS, JudgeAnswer, SubScore, parse_answer
from descore.errors import ConfigError

QualityRule = Literal["exact", "distance"]
LengthUnit = Literal["chars", "tokens"]
LengthShape = Literal["step", "linear"]

#: The reference code's length steps: characters -> reward.
REFERENCE_LENGTH_THRESHOLDS: tuple[float, ...] = (500.0, 1000.0, 1500.0, 2000.0)
REFERENCE_LENGTH_VALUES: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 1.0)


@dataclass(frozen=True)
class RolloutReward:
    """The reward of one rollout and its components (each in [0, 1]); ``total`` is their weighted sum."""

    total: float
    quality: float
    format: float
    length: float
    answer: JudgeAnswer | None


def quality_reward(
    predicted: Mapping[str, SubScore] | None, truth: Mapping[str, SubScore], rule: QualityRule = "exact"
) -> float:
    """Agreement of predicted sub-scores with the ground truth over :data:`~descore.answer.DIMENSIONS`, in [0, 1]."""
    if predicted is None:
        return 0.0
    missing = [d for d in DIMENSIONS if d not in truth]
    if missing:
        raise ConfigError(f"ground-truth sub-scores lack dimension(s) {missing}")
    credit = 0.0
    for dim in DIMENSIONS:
        p, t = predicted.get(dim), truth[dim]
        if p is None or t is None:
            credit += float(p is None and t is None)
        elif rule == "exact":
            credit += float(p == t)
        elif rule == "distance":
            credit += 1.0 - abs(p - t) / 2.0
        else:
            raise ConfigError(f"quality_rule must be 'exact' or 'distance', got {rule!r}")
    return credit / len(DIMENSIONS)


def format_reward(answer: JudgeAnswer | None) -> float:
    """1 when the CoT ended with a parseable answer block that has every dimensional score, else 0."""
    return float(answer is not None)


def length_reward(
    length: float,
    shape: LengthShape = "step",
    thresholds: Sequence[float] = REFERENCE_LENGTH_THRESHOLDS,
    values: Sequence[float] = REFERENCE_LENGTH_VALUES,
) -> float:
    """The length term. ``step``: ``values[k]`` where ``k`` thresholds are reached (``len(values) ==
    len(thresholds) + 1``). ``linear``: 0 at ``thresholds[0]`` rising to 1 at ``thresholds[1]`` (``values`` unused)."""
    if shape == "step":
        return float(values[bisect.bisect_right(list(thresholds), length)])
    if shape == "linear":
        low, high = thresholds
        return float(min(1.0, max(0.0, (length - low) / (high - low))))
    raise ConfigError(f"length_shape must be 'step' or 'linear', got {shape!r}")


@dataclass(frozen=True)
class RewardRule:
    """Weights and rules of the rollout reward (defaults: the reference recipe)."""

    quality_weight: float = 0.7
    format_weight: float = 0.1
    length_weight: float = 0.2
    quality_rule: QualityRule = "exact"
    length_unit: LengthUnit = "chars"
    length_shape: LengthShape = "step"
    length_thresholds: tuple[float, ...] = field(default=REFERENCE_LENGTH_THRESHOLDS)
    length_values: tuple[float, ...] = field(default=REFERENCE_LENGTH_VALUES)

    def __post_init__(self) -> None:
        object.__setattr__(self, "length_thresholds", tuple(float(t) for t in self.length_thresholds))
        object.__setattr__(self, "length_values", tuple(float(v) for v in self.length_values))
        self.validate()

    def validate(self) -> None:
        problems = []
        weights = {
            "quality_weight": self.quality_weight,
            "format_weight": self.format_weight,
            "length_weight": self.length_weight,
        }
        problems += [
            f"{k} must be a finite number >= 0, got {v!r}"
            for k, v in weights.items()
            if not (math.isfinite(v) and v >= 0)
        ]
        if not any(problems) and sum(weights.values()) <= 0:
            problems.append("at least one reward weight must be > 0")
        if self.quality_rule not in ("exact", "distance"):
            problems.append(f"quality_rule must be 'exact' or 'distance', got {self.quality_rule!r}")
        if self.length_unit not in ("chars", "tokens"):
            problems.append(f"length_unit must be 'chars' or 'tokens', got {self.length_unit!r}")
        thresholds, values = self.length_thresholds, self.length_values
        if (
            list(thresholds) != sorted(thresholds)
            or len(set(thresholds)) != len(thresholds)
            or any(t < 0 for t in thresholds)
        ):
            problems.append(
                f"length_thresholds must be distinct, non-negative and increasing, got {list(thresholds)}"
            )
        if self.length_shape == "step":
            if not thresholds or len(values) != len(thresholds) + 1:
                problems.append(
                    f"a step length rule needs n >= 1 thresholds and n + 1 values (length_thresholds, length_values), "
                    f"got {len(thresholds)} thresholds and {len(values)} values"
                )
            elif any(not 0 <= v <= 1 for v in values):
                problems.append(f"length_values must lie in [0, 1], got {list(values)}")
        elif self.length_shape == "linear":
            if len(thresholds) != 2:
                problems.append(
                    f"a linear length rule needs 2 thresholds (0 at the first, 1 at the second), got {list(thresholds)}"
                )
        else:
            problems.append(f"length_shape must be 'step' or 'linear', got {self.length_shape!r}")
        if problems:
            raise ConfigError("rollout reward: " + "; ".join(problems))

    def __call__(self, cot: str, num_tokens: int, truth: Mapping[str, SubScore]) -> RolloutReward:
        """The reward of a chain of thought ``cot`` of ``num_tokens`` tokens for a video with sub-scores ``truth``."""
        answer = parse_answer(cot)
        quality = quality_reward(answer.dimensional_scores if answer else None, truth, self.quality_rule)
        fmt = format_reward(answer)
        size = len(cot) if self.length_unit == "chars" else num_tokens
        length = length_reward(size, self.length_shape, self.length_thresholds, self.length_values)
        total = self.quality_weight * quality + self.format_weight * fmt + self.length_weight * length
        return RolloutReward(total=total, quality=quality, format=fmt, length=length, answer=answer)


__all__ = [
    "REFERENCE_LENGTH_THRESHOLDS",
    "REFERENCE_LENGTH_VALUES",
    "RewardRule",
    "RolloutReward",
    "format_reward",
    "length_reward",
    "quality_reward",
]
