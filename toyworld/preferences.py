"""Preference labels for pairs of toy videos made for the same prompt, read off the ground truth.

The hidden utility of a video is the judge's overall score of its ground-truth sub-scores (the interval rule of
:func:`descore.answer.overall_from_subscores`): primary dimensions dominate, and inside a band the share of points
earned decides. Equal utility is a tie (``same``). Each judge dimension gets its own label from its sub-score (N/A
on both sides is a tie). VideoAlign's label columns are filled from the same truth: ``VQ`` (visual quality) from
style, ``MQ`` (motion quality) from dynamics, ``TA`` (text alignment) and ``Overall`` from the utility, since the
DeScore judge is a video-text alignment judge whose overall score is its alignment verdict.

Optional label noise flips each label, independently, to one of the two other labels with a given probability,
like a careless annotator; the ground-truth sub-scores themselves are never noised.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from descore.answer import DIMENSIONS, SubScore, overall_from_subscores
from descore.errors import ConfigError

#: Label values of the pair files.
LABELS: tuple[str, ...] = ("A", "B", "same")
#: VideoAlign label columns and the ground truth each is read from ("overall" = the hidden utility).
VIDEOALIGN_SOURCES: dict[str, str] = {"VQ": "style", "MQ": "dynamics", "TA": "overall", "Overall": "overall"}
#: Every label column of a toy pair file, in file order.
LABEL_COLUMNS: tuple[str, ...] = (*VIDEOALIGN_SOURCES, *DIMENSIONS)


def utility(subscores: Mapping[str, SubScore]) -> float:
    """The hidden utility of a video: the judge's overall score of its ground-truth sub-scores."""
    return overall_from_subscores(subscores)


def compare(a: float | None, b: float | None) -> str:
    """``A`` when a is higher, ``B`` when b is, ``same`` when equal (N/A against N/A is equal)."""
    if a is None or b is None:
        if (a is None) != (b is None):
            raise ConfigError(f"cannot compare an applicable score with N/A ({a!r} vs {b!r})")
        return "same"
    return "A" if a > b else "B" if b > a else "same"


@dataclass(frozen=True)
class PairLabels:
    """The labels of one pair, keyed by label column (``VQ, MQ, TA, Overall`` and the five judge dimensions)."""

    labels: dict[str, str]

    @property
    def overall(self) -> str:
        return self.labels["Overall"]


def label_pair(
    subscores_a: Mapping[str, SubScore],
    subscores_b: Mapping[str, SubScore],
    *,
    noise: float = 0.0,
    rng: np.random.Generator | None = None,
) -> PairLabels:
    """Labels of a pair from both videos' ground-truth sub-scores, with optional label noise (needs ``rng``)."""
    if not 0.0 <= noise <= 1.0:
        raise ConfigError(f"label noise must be a probability in [0, 1], got {noise!r}")
    if noise > 0 and rng is None:
        raise ConfigError("label noise needs a random generator (rng)")
    truth = {d: compare(subscores_a[d], subscores_b[d]) for d in DIMENSIONS}
    truth["overall"] = compare(utility(subscores_a), utility(subscores_b))
    labels = {column: truth[source] for column, source in VIDEOALIGN_SOURCES.items()}
    labels.update({d: truth[d] for d in DIMENSIONS})
    if noise > 0:
        for column in LABEL_COLUMNS:
            flip = rng.random() < noise
            other = rng.integers(2)
            if flip:
                labels[column] = [v for v in LABELS if v != labels[column]][int(other)]
    return PairLabels(labels={column: labels[column] for column in LABEL_COLUMNS})
