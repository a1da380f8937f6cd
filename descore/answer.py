"""The judge's answer block: sub-dimension scores, the interval rule for the overall score, and parsing.

A DeScore chain of thought ends with ``<answer>{"dimensional_scores": {...}, "overall_score": x.xx}</answer>``.
The overall score written in text is not the reward (the head output is), but it is what stage-2 RL checks the CoT
against, and what the toy world writes as ground truth.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

DIMENSIONS: tuple[str, ...] = ("subject", "dynamics", "camera", "environment", "style")
PRIMARY_DIMENSIONS: tuple[str, ...] = ("subject", "dynamics")
SECONDARY_DIMENSIONS: tuple[str, ...] = ("camera", "environment", "style")

#: A sub-score: 2 = perfect, 1 = minor flaws, 0 = failure, None = not applicable ("N/A").
SubScore = int | None

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


@dataclass(frozen=True)
class JudgeAnswer:
    """A parsed answer block."""

    dimensional_scores: dict[str, SubScore]
    overall_score: float | None


def _check_scores(scores: Mapping[str, SubScore]) -> None:
    unknown = set(scores) - set(DIMENSIONS)
    missing = set(DIMENSIONS) - set(scores)
    if unknown or missing:
        raise ValueError(
            f"dimensional scores need exactly the keys {list(DIMENSIONS)}; "
            f"missing {sorted(missing)}, unknown {sorted(unknown)}"
        )
    for name, value in scores.items():
        if value not in (0, 1, 2, None):
            raise ValueError(f"sub-score {name!r} must be 0, 1, 2 or None (N/A), got {value!r}")
    for name in PRIMARY_DIMENSIONS:
        if scores[name] is None:
            raise ValueError(f"primary dimension {name!r} cannot be N/A")


def overall_from_subscores(scores: Mapping[str, SubScore]) -> float:
    """The overall score (1.00-5.00) the judge's interval rule assigns to a set of sub-scores.

    The integer band follows the rule: 5 when every dimension is perfect (or N/A), 4 when only secondary dimensions
    have flaws, 3 when a primary dimension is 1, 2 when one primary is 0, 1 when both primaries are 0. Inside a band
    the decimals grow with the share of points earned over the applicable dimensions, so better videos rank higher.
    """
    _check_scores(scores)
    primary = [scores[d] for d in PRIMARY_DIMENSIONS]
    applicable = [v for v in scores.values() if v is not None]
    if primary.count(0) == 2:
        band = 1
    elif primary.count(0) == 1:
        band = 2
    elif 1 in primary:
        band = 3
    elif all(v == 2 for v in applicable):
        return 5.0
    else:
        band = 4
    share = sum(applicable) / (2 * len(applicable))
    return round(band + min(0.99, 0.99 * share), 2)


def format_answer(scores: Mapping[str, SubScore], overall: float | None = None) -> str:
    """The answer block for the given sub-scores (N/A written as the string "N/A")."""
    _check_scores(scores)
    overall = overall_from_subscores(scores) if overall is None else overall
    payload = {
        "dimensional_scores": {d: ("N/A" if scores[d] is None else int(scores[d])) for d in DIMENSIONS},
        "overall_score": round(float(overall), 2),
    }
    return f"<answer>{json.dumps(payload)}</answer>"


def parse_subscore(value: object) -> SubScore:
    """One sub-score as written in an answer or a pair file: 0, 1, 2 (numbers or numeric strings) or N/A.
    Raises ValueError on other numbers or text and TypeError on other types (JSON booleans included)."""
    if value is None or (isinstance(value, str) and value.strip().upper() in {"N/A", "NA", "NONE", ""}):
        return None
    if isinstance(value, bool):
        raise TypeError(f"bad sub-score {value!r}")
    number = float(value)  # raises ValueError on junk
    if number not in (0.0, 1.0, 2.0):
        raise ValueError(f"bad sub-score {value!r}")
    return int(number)


def parse_answer(text: str) -> JudgeAnswer | None:
    """Parse the last ``<answer>...</answer>`` block of a CoT. Returns None when there is none or it is malformed."""
    blocks = _ANSWER_RE.findall(text)
    if not blocks:
        return None
    try:
        payload = json.loads(blocks[-1].strip())
        raw = payload["dimensional_scores"]
        if not isinstance(raw, dict) or set(raw) != set(DIMENSIONS):
            return None
        scores = {d: parse_subscore(raw[d]) for d in DIMENSIONS}
        overall = payload.get("overall_score")
        overall = None if overall is None else float(overall)
    except (ValueError, TypeError, KeyError, json.JSONDecodeError):
        return None
    return JudgeAnswer(dimensional_scores=scores, overall_score=overall)
