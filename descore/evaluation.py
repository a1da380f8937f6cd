"""Pair-accuracy evaluation of a reward model on a preference-pair file.

Every distinct (video, prompt) input - with its CoT in given-CoT mode - is scored once, then each label dimension
gets both accuracies of :mod:`descore.metrics`: without ties (over the non-tie pairs) and tie-calibrated with ties
(the VideoGen-RewardBench protocol, reporting the chosen threshold). Modes:

* ``think``: the model writes its chain of thought, then scores (DeScore's default inference);
* ``no_think``: think-free, one forward pass per input;
* ``given_cot``: score with the file's ``CoT_A`` / ``CoT_B`` (teacher-forced, as in stage-1 training).

:func:`evaluate_pairs` runs a :class:`~descore.scoring.DeScore`; :func:`evaluate_with` takes any function that scores
a list of distinct inputs (the trainer uses it on frames decoded once). :func:`write_evaluation` writes per-pair
results (``Reward_A``, ``Reward_B``, ``CoT_A``, ``CoT_B``) and ``summary.json``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from descore.errors import ConfigError, DataError
from descore.metrics import DimensionAccuracy, ScoringInput, evaluate_dimensions, pair_inputs
from descore.pairs import PairDataset, write_pair_results

logger = logging.getLogger(__name__)

EvalMode = Literal["think", "no_think", "given_cot"]
EVAL_MODES: tuple[str, ...] = ("think", "no_think", "given_cot")
SUMMARY_NAME = "summary.json"

#: Scores distinct inputs: returns one reward per input and, when it wrote them, one CoT per input (else None).
ScoreFunction = Callable[
    [list[ScoringInput]], tuple[Sequence[float] | np.ndarray, Sequence[str | None] | None]
]


@dataclass
class PairEvaluation:
    """Rewards per pair, the CoTs scored with (None where there was none) and the accuracies per dimension."""

    mode: str
    reward_a: np.ndarray
    reward_b: np.ndarray
    cots_a: list[str | None] | None
    cots_b: list[str | None] | None
    dimensions: dict[str, DimensionAccuracy]
    num_pairs: int
    num_inputs: int
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary: mode, counts, time and, per dimension, both accuracies with their details."""
        per_dim = {
            name: {
                "without_ties": _clean(asdict(report.without_ties)),
                "with_ties": _clean(asdict(report.with_ties)),
            }
            for name, report in self.dimensions.items()
        }
        return {
            "mode": self.mode,
            "num_pairs": self.num_pairs,
            "num_scored_inputs": self.num_inputs,
            "seconds": round(self.seconds, 3),
            "dimensions": per_dim,
            **self.info,
        }


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in values.items()}


def _check(pairs: PairDataset, mode: str, dimensions: Sequence[str] | None) -> list[str]:
    if mode not in EVAL_MODES:
        raise ConfigError(f"unknown evaluation mode {mode!r}; expected one of {list(EVAL_MODES)}")
    if not len(pairs):
        raise DataError(str(pairs.source), ["no pairs to evaluate"])
    if mode == "given_cot" and not pairs.has_cot:
        raise DataError(
            str(pairs.source),
            ["given-CoT evaluation needs CoT_A and CoT_B for every pair; use think or no-think"],
        )
    names = list(pairs.dimensions) if dimensions is None else list(dimensions)
    for name in names:
        pairs.labels(name)  # raises ConfigError naming the available label columns
    return names


def evaluate_with(
    score: ScoreFunction,
    pairs: PairDataset,
    *,
    mode: EvalMode = "no_think",
    dimensions: Sequence[str] | None = None,
) -> PairEvaluation:
    """Score the distinct inputs of ``pairs`` with ``score`` (once each) and compute accuracies per dimension."""
    names = _check(pairs, mode, dimensions)
    distinct = pair_inputs(pairs, with_cot=mode == "given_cot")
    began = time.perf_counter()
    rewards, cots = score(distinct.inputs)
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.shape != (len(distinct.inputs),):
        raise DataError(
            "evaluation", [f"got {rewards.shape} rewards for {len(distinct.inputs)} distinct inputs"]
        )
    reward_a, reward_b = distinct.split(rewards)
    if cots is None and mode == "given_cot":
        cots = [item.cot for item in distinct.inputs]
    cots_a = cots_b = None
    if cots is not None:
        cots = list(cots)
        cots_a = [cots[i] for i in distinct.index_a]
        cots_b = [cots[i] for i in distinct.index_b]
    report = evaluate_dimensions(
        reward_a, reward_b, {name: [int(v) for v in pairs.labels(name)] for name in names}
    )
    return PairEvaluation(
        mode=mode,
        reward_a=np.asarray(reward_a),
        reward_b=np.asarray(reward_b),
        cots_a=cots_a,
        cots_b=cots_b,
        dimensions=report,
        num_pairs=len(pairs),
        num_inputs=len(distinct.inputs),
        seconds=time.perf_counter() - began,
    )


def evaluate_pairs(
    scorer: Any,
    pairs: PairDataset,
    *,
    mode: EvalMode = "think",
    dimensions: Sequence[str] | None = None,
    batch_size: int = 8,
    generation: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> PairEvaluation:
    """Evaluate a :class:`~descore.scoring.DeScore` on ``pairs`` (each distinct video decoded and scored once)."""

    def score(items: list[ScoringInput]) -> tuple[Any, list[str | None] | None]:
        out = scorer.score(
            [str(item.video) for item in items],
            [item.prompt for item in items],
            think=mode == "think",
            cots=[item.cot for item in items] if mode == "given_cot" else None,
            batch_size=batch_size,
            generation=generation,
            progress=progress,
        )
        return out.rewards.float().cpu().numpy(), out.cots if mode == "think" else None

    evaluation = evaluate_with(score, pairs, mode=mode, dimensions=dimensions)
    evaluation.info["sampling"] = asdict(scorer.config.sampling)
    return evaluation


def write_evaluation(
    evaluation: PairEvaluation,
    pairs: PairDataset,
    out_dir: str | Path,
    *,
    results_name: str | None = None,
    info: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write per-pair results (``results.csv`` or ``results.jsonl``, following the pair file) and ``summary.json``.

    ``CoT_A`` / ``CoT_B`` hold the CoT each reward was computed with: generated in think mode, the file's own in
    given-CoT mode; in think-free mode they are left as the input file had them.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = ".jsonl" if pairs.source.suffix.lower() in (".jsonl", ".ndjson") else ".csv"
    results = write_pair_results(
        out_dir / (results_name or f"results{suffix}"),
        list(pairs),
        evaluation.reward_a,
        evaluation.reward_b,
        cots_a=evaluation.cots_a,
        cots_b=evaluation.cots_b,
    )
    summary = {"pairs": str(pairs.source), **evaluation.summary(), **(info or {}), "results": str(results)}
    summary_path = out_dir / SUMMARY_NAME
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("wrote %s and %s", results, summary_path)
    return results, summary_path


def format_report(evaluation: PairEvaluation) -> str:
    """A short human-readable table of both accuracies per dimension."""
    lines = [f"mode {evaluation.mode}: {evaluation.num_pairs} pairs, {evaluation.num_inputs} inputs scored"]
    for name, report in evaluation.dimensions.items():
        without, with_ties = report.without_ties, report.with_ties
        lines.append(
            f"  {name}: accuracy w/o ties {without.accuracy:.4f} ({without.correct}/{without.num_pairs}), "
            f"with ties {with_ties.accuracy:.4f} at threshold {with_ties.epsilon:.4g} "
            f"({with_ties.human_ties} human ties, {with_ties.predicted_ties} predicted)"
        )
    return "\n".join(lines)
