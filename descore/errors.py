"""Exceptions raised by descore. Each names the input at fault and what was expected."""

from __future__ import annotations


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
