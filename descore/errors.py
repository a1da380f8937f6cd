"""Exceptions raised by descore. Each names the input at fault and what was expected."""

from __future__ import annotations

import math
import numbers


class DeScoreError(Exception):
    """Base class for every error descore raises on purpose."""


class VideoError(DeScoreError, ValueError):
    """A video (file or in-memory frames) cannot be read or does not have the expected form."""


class PreprocessingError(DeScoreError, ValueError):
    """Frames cannot be turned into model inputs under the requested sampling (size, pixel budget, frame count)."""


class CheckpointError(DeScoreError, ValueError):
    """A checkpoint is missing, incomplete or does not match the model it is loaded into."""


class ConfigError(DeScoreError, ValueError):
    """A configuration value is missing, unknown or out of range."""


class DataError(DeScoreError, ValueError):
    """A data file (pairs, annotations) is malformed. Carries every problem found, not just the first."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        listing = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s):\n{listing}")


def check_positive(name: str, value: object, expected: str = "a positive number") -> float:
    """``value`` as a float when it is a finite positive real number (a bool is not), else a ConfigError that names
    it and says what was ``expected``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{name} must be {expected}, got {value!r}")
    return float(value)
