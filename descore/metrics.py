"""Pair accuracy with and without ties, per-dimension reports, and scoring each distinct input once.

* Without ties: over the pairs whose human label is not a tie, ``correct / (correct + wrong + model ties)``; a pair
  the model scores exactly equal counts against it.
* With ties (tie-calibrated, "Ties Matter", Deutsch et al. 2023, Algorithm 1; the protocol of VideoGen-RewardBench):
  the model predicts a tie when ``|r_A - r_B| <= eps``; ``eps`` is swept over 0 and every observed ``|r_A - r_B|``,
  3-class accuracy is computed over ALL pairs for each, and the best is reported with its ``eps`` (the smallest
  ``eps`` among equally good ones).

Edge cases: empty inputs and non-finite rewards raise :class:`~descore.errors.DataError`. A set with no non-tie pair
has no accuracy without ties: :func:`accuracy_without_ties` then returns NaN with ``defined=False`` (and logs a
warning) instead of raising, so that a multi-dimension report is still produced for the other dimensions.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
import torch

from descore.errors import DataError
from descore.pairs import PairLabel, PreferencePair

logger = logging.getLogger(__name__)

T = TypeVar("T")
ArrayLike = Sequence[float] | np.ndarray | torch.Tensor


@dataclass(frozen=True)
class PairAccuracy:
    """Accuracy over non-tie pairs. ``model_ties`` pairs got equal rewards and count as not correct."""

    accuracy: float
    correct: int
    wrong: int
    model_ties: int
    num_pairs: int
    skipped_ties: int

    @property
    def defined(self) -> bool:
        """False when there was no non-tie pair to score (``accuracy`` is then NaN)."""
        return self.num_pairs > 0


@dataclass(frozen=True)
class TieCalibratedAccuracy:
    """3-class accuracy over all pairs at the best tie threshold ``epsilon``."""

    accuracy: float
    epsilon: float
    correct: int
    num_pairs: int
    human_ties: int
    predicted_ties: int


@dataclass(frozen=True)
class DimensionAccuracy:
    """Both accuracies for one label dimension."""

    dimension: str
    without_ties: PairAccuracy
    with_ties: TieCalibratedAccuracy


def _rewards(values: ArrayLike, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise DataError(name, [f"expected one reward per pair (a 1-D sequence), got shape {array.shape}"])
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise DataError(name, [f"{bad.size} non-finite reward(s), first at index {bad[:10].tolist()}"])
    return array


def label_array(labels: Iterable[int] | np.ndarray | torch.Tensor, name: str = "labels") -> np.ndarray:
    """Labels as an int8 array of +1 (A), -1 (B), 0 (tie); raises DataError naming any other value."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    array = np.asarray(labels if isinstance(labels, np.ndarray) else list(labels))
    if array.ndim != 1:
        raise DataError(name, [f"expected a 1-D sequence of labels, got shape {array.shape}"])
    if array.size and not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise DataError(name, [f"labels must be +1 (A), -1 (B) or 0 (tie), got dtype {array.dtype}"])
    bad = np.flatnonzero(~np.isin(array, (-1, 0, 1)))
    if bad.size:
        shown = ", ".join(f"[{i}] = {array[i]}" for i in bad[:10])
        raise DataError(name, [f"{bad.size} label(s) not in +1 (A), -1 (B), 0 (tie): {shown}"])
    return array.astype(np.int8)


def _inputs(reward_a: ArrayLike, reward_b: ArrayLike, labels: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(r_A - r_B, labels)`` after checking the three inputs agree."""
    r_a, r_b = _rewards(reward_a, "reward_a"), _rewards(reward_b, "reward_b")
    y = label_array(labels)
    if not (len(r_a) == len(r_b) == len(y)):
        raise DataError(
            "pair accuracy",
            [f"reward_a ({len(r_a)}), reward_b ({len(r_b)}) and labels ({len(y)}) differ in length"],
        )
    if len(y) == 0:
        raise DataError("pair accuracy", ["no pairs to score (empty inputs)"])
    return r_a - r_b, y


def accuracy_without_ties(reward_a: ArrayLike, reward_b: ArrayLike, labels: Iterable[int]) -> PairAccuracy:
    """Share of non-tie pairs whose preferred video got the strictly higher reward."""
    diff, y = _inputs(reward_a, reward_b, labels)
    keep = y != PairLabel.TIE
    signed = diff[keep] * y[keep]
    correct, wrong = int((signed > 0).sum()), int((signed < 0).sum())
    model_ties = int((signed == 0).sum())
    total = int(keep.sum())
    if total == 0:
        logger.warning("accuracy without ties is undefined: all %d pairs are ties", len(y))
    return PairAccuracy(
        accuracy=correct / total if total else math.nan,
        correct=correct,
        wrong=wrong,
        model_ties=model_ties,
        num_pairs=total,
        skipped_ties=len(y) - total,
    )


def accuracy_with_ties(
    reward_a: ArrayLike, reward_b: ArrayLike, labels: Iterable[int]
) -> TieCalibratedAccuracy:
    """Tie-calibrated 3-class accuracy over all pairs ("Ties Matter", Algorithm 1), in O(n log n)."""
    diff, y = _inputs(reward_a, reward_b, labels)
    gap = np.abs(diff)
    candidates = np.unique(np.concatenate([[0.0], gap]))
    # At threshold eps: a tie is right when |d| <= eps, A when d > eps, B when -d > eps.
    tie_gaps = np.sort(gap[y == PairLabel.TIE])
    a_gaps = np.sort(diff[y == PairLabel.A])
    b_gaps = np.sort(-diff[y == PairLabel.B])
    correct = (
        np.searchsorted(tie_gaps, candidates, side="right")
        + (len(a_gaps) - np.searchsorted(a_gaps, candidates, side="right"))
        + (len(b_gaps) - np.searchsorted(b_gaps, candidates, side="right"))
    )
    best = int(np.argmax(correct))  # first maximum: the smallest eps
    eps = float(candidates[best])
    return TieCalibratedAccuracy(
        accuracy=float(correct[best]) / len(y),
        epsilon=eps,
        correct=int(correct[best]),
        num_pairs=len(y),
        human_ties=len(tie_gaps),
        predicted_ties=int((gap <= eps).sum()),
    )


def evaluate_dimensions(
    reward_a: ArrayLike | Mapping[str, ArrayLike],
    reward_b: ArrayLike | Mapping[str, ArrayLike],
    labels: Mapping[str, Iterable[int]],
) -> dict[str, DimensionAccuracy]:
    """Both accuracies for every label dimension.

    ``reward_a`` / ``reward_b`` are one reward per pair used for every dimension (DeScore's single scalar), or a
    mapping dimension -> rewards for models with one head per dimension (VideoAlign's VQ / MQ / TA).
    """
    report = {}
    for dimension, dim_labels in labels.items():
        per_dim = []
        for name, rewards in (("reward_a", reward_a), ("reward_b", reward_b)):
            if isinstance(rewards, Mapping):
                if dimension not in rewards:
                    raise DataError(name, [f"no rewards for dimension {dimension!r}; have {sorted(rewards)}"])
                rewards = rewards[dimension]
            per_dim.append(rewards)
        dim_labels = label_array(dim_labels, name=f"labels[{dimension!r}]")
        report[dimension] = DimensionAccuracy(
            dimension=dimension,
            without_ties=accuracy_without_ties(per_dim[0], per_dim[1], dim_labels),
            with_ties=accuracy_with_ties(per_dim[0], per_dim[1], dim_labels),
        )
    return report


@dataclass(frozen=True)
class Deduplicated(Generic[T]):
    """Distinct items and, for every original item, the position of its distinct copy (``unique[index[i]]``)."""

    unique: list[T]
    index: np.ndarray

    def expand(self, values: ArrayLike) -> np.ndarray | torch.Tensor:
        """Per-item values from one value per distinct item (a tensor stays a tensor, keeping its gradient)."""
        if len(values) != len(self.unique):
            raise DataError(
                "expand", [f"got {len(values)} value(s) for {len(self.unique)} distinct input(s)"]
            )
        if isinstance(values, torch.Tensor):
            return values[torch.as_tensor(self.index, device=values.device)]
        return np.asarray(values)[self.index]


def unique_inputs(items: Iterable[T], key: Callable[[T], Hashable] | None = None) -> Deduplicated[T]:
    """Keep the first of every group of items with equal ``key(item)`` (the item itself by default), in order."""
    positions: dict[Hashable, int] = {}
    unique: list[T] = []
    index = []
    for item in items:
        k = item if key is None else key(item)
        if k not in positions:
            positions[k] = len(unique)
            unique.append(item)
        index.append(positions[k])
    return Deduplicated(unique=unique, index=np.asarray(index, dtype=np.int64))


@dataclass(frozen=True)
class ScoringInput:
    """What one reward is computed from: a video, its prompt and, when scoring with a given CoT, that CoT."""

    video: Path
    prompt: str
    cot: str | None = None


@dataclass(frozen=True)
class PairInputs:
    """The distinct inputs of a list of pairs; ``index_a[i]`` / ``index_b[i]`` locate pair i's two inputs."""

    inputs: list[ScoringInput]
    index_a: np.ndarray
    index_b: np.ndarray

    def split(self, scores: ArrayLike) -> tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]:
        """``(reward_a, reward_b)`` per pair from one score per distinct input."""
        if len(scores) != len(self.inputs):
            raise DataError("split", [f"got {len(scores)} score(s) for {len(self.inputs)} distinct input(s)"])
        if isinstance(scores, torch.Tensor):
            return (
                scores[torch.as_tensor(self.index_a, device=scores.device)],
                scores[torch.as_tensor(self.index_b, device=scores.device)],
            )
        scores = np.asarray(scores)
        return scores[self.index_a], scores[self.index_b]


def pair_inputs(pairs: Iterable[PreferencePair], *, with_cot: bool = False) -> PairInputs:
    """De-duplicate the (video, prompt) inputs of pairs so each is scored once (with its CoT too if ``with_cot``).

    Inputs are ordered by first appearance (pair 0's A, pair 0's B, pair 1's A, ...).
    """
    items = []
    for pair in pairs:
        items.append(ScoringInput(pair.video_a, pair.prompt, pair.cot_a if with_cot else None))
        items.append(ScoringInput(pair.video_b, pair.prompt, pair.cot_b if with_cot else None))
    dedup = unique_inputs(items)
    return PairInputs(inputs=dedup.unique, index_a=dedup.index[0::2], index_b=dedup.index[1::2])


def bootstrap_interval(
    values: ArrayLike, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``values`` (one per independent unit: a prompt, a paired sample) with a 95% percentile-bootstrap
    interval, so that a benchmark's gain is reported with the noise of its sample."""
    values = _rewards(values, "values")
    if not values.size:
        raise DataError("values", ["no values to average"])
    draws = np.random.default_rng(seed).integers(len(values), size=(resamples, len(values)))
    low, high = np.percentile(values[draws].mean(axis=1), [2.5, 97.5])
    return float(values.mean()), float(low), float(high)
