"""Pairwise reward losses: Bradley-Terry, and Bradley-Terry with ties (Rao-Kupper).

With ``d = r_A - r_B`` and a tie parameter ``k > 1`` (``theta`` in Rao & Kupper, 1967; VideoAlign uses ``k = 5``),
the Rao-Kupper model gives the three outcomes of a pair the probabilities

* ``P(A preferred) = sigmoid(d - log k)``
* ``P(B preferred) = sigmoid(-d - log k)``
* ``P(tie) = (k^2 - 1) * sigmoid(d - log k) * sigmoid(-d - log k)``

(with ``a = exp(r_A)``, ``b = exp(r_B)``: ``a / (a + k b)``, ``b / (b + k a)`` and
``(k^2 - 1) a b / ((a + k b)(b + k a))``; the three numerators add up to the common denominator, so they sum to 1).
The tie loss is therefore ``-log P(tie) = -log sigmoid(d - log k) - log sigmoid(-d - log k) - log(k^2 - 1)``,
a proper negative log-likelihood (never negative, minimal at ``d = 0``); the constant ``log(k^2 - 1)`` does not
change gradients. A non-tie pair costs ``-log sigmoid(d - log k)`` with ``d = r_winner - r_loser``.

Without ties (``ties="drop"``), the loss is the plain Bradley-Terry ``-log sigmoid(r_chosen - r_rejected - margin)``
of trl's RewardTrainer and of the DeScore reference, and tied pairs are left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from descore.errors import ConfigError, DataError
from descore.pairs import PairLabel

TieMode = Literal["drop", "bt_ties"]
Reduction = Literal["mean", "sum", "none"]

#: VideoAlign's tie parameter.
DEFAULT_TIE_K = 5.0


@dataclass(frozen=True)
class LossOutput:
    """A pair loss and the statistics worth logging with it (all statistics are detached).

    ``loss`` is a scalar for ``reduction`` "mean" or "sum"; for "none" it has one entry per input pair, 0 where a pair
    was dropped. ``mask`` marks the pairs that contribute to the loss. ``accuracy`` is the share of non-tie pairs whose
    preferred video got the strictly higher reward; ``margin_mean`` / ``margin_std`` describe ``r_winner - r_loser``
    over non-tie pairs, ``tie_gap_mean`` the mean ``|r_A - r_B|`` over tie pairs. Undefined statistics are NaN.
    """

    loss: torch.Tensor
    accuracy: torch.Tensor
    margin_mean: torch.Tensor
    margin_std: torch.Tensor
    tie_gap_mean: torch.Tensor
    mask: torch.Tensor
    num_pairs: int
    num_ties: int


def rao_kupper_probabilities(
    diff: torch.Tensor, tie_k: float = DEFAULT_TIE_K
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(P(A preferred), P(tie), P(B preferred))`` under Rao-Kupper for reward differences ``diff = r_A - r_B``."""
    log_k = _log_k(tie_k)
    log_a = F.logsigmoid(diff - log_k)
    log_b = F.logsigmoid(-diff - log_k)
    return log_a.exp(), (log_a + log_b + math.log(tie_k**2 - 1)).exp(), log_b.exp()


def _log_k(tie_k: float) -> float:
    if not (isinstance(tie_k, (int, float)) and math.isfinite(tie_k) and tie_k > 1):
        raise ConfigError(f"tie_k must be a finite number > 1 (the Rao-Kupper tie parameter), got {tie_k!r}")
    return math.log(tie_k)


def _check_inputs(
    reward_a: torch.Tensor, reward_b: torch.Tensor, labels: torch.Tensor | Sequence[int]
) -> torch.Tensor:
    problems = []
    for name, value in (("reward_a", reward_a), ("reward_b", reward_b)):
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            problems.append(f"{name} must be a floating-point tensor, got {type(value).__name__}")
    if problems:
        raise DataError("pair_loss", problems)
    labels = torch.as_tensor(labels, device=reward_a.device)
    if reward_a.shape != reward_b.shape or labels.shape != reward_a.shape:
        problems.append(
            f"reward_a {tuple(reward_a.shape)}, reward_b {tuple(reward_b.shape)} and labels {tuple(labels.shape)} "
            "must have the same shape"
        )
    elif reward_a.numel() == 0:
        problems.append("no pairs (empty inputs)")
    elif labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        problems.append(f"labels must be integers +1 (A), -1 (B) or 0 (tie), got dtype {labels.dtype}")
    else:
        bad = torch.nonzero((labels < -1) | (labels > 1)).flatten()
        if bad.numel():
            shown = ", ".join(f"[{i}] = {labels.flatten()[i].item()}" for i in bad[:10].tolist())
            problems.append(f"{bad.numel()} label(s) not in +1 (A), -1 (B), 0 (tie): {shown}")
    if problems:
        raise DataError("pair_loss", problems)
    return labels.to(torch.int8)


def pair_loss(
    reward_a: torch.Tensor,
    reward_b: torch.Tensor,
    labels: torch.Tensor | Sequence[int],
    *,
    ties: TieMode = "drop",
    tie_k: float = DEFAULT_TIE_K,
    margin: float | torch.Tensor = 0.0,
    reduction: Reduction = "mean",
) -> LossOutput:
    """The preference loss of a batch of pairs.

    ``labels`` holds +1 where A is preferred, -1 where B is, 0 for a tie (see :class:`~descore.pairs.PairLabel`).
    ``ties="drop"``: Bradley-Terry ``-log sigmoid(r_winner - r_loser - margin)``, tied pairs left out.
    ``ties="bt_ties"``: Rao-Kupper negative log-likelihood with tie parameter ``tie_k`` (module docstring); ``margin``
    is then subtracted from ``r_winner - r_loser`` of non-tie pairs only. ``margin`` is a number or one per pair.
    Computed in float32 (or the rewards' dtype if wider) through ``logsigmoid``, so it is stable for any reward gap.

    Raises DataError on mismatched shapes, labels other than -1/0/+1, an empty batch, or a batch whose pairs are all
    ties under ``ties="drop"``; ConfigError on an unknown ``ties`` / ``reduction`` or ``tie_k <= 1``.
    """
    if ties not in ("drop", "bt_ties"):
        raise ConfigError(f"ties must be 'drop' or 'bt_ties', got {ties!r}")
    if reduction not in ("mean", "sum", "none"):
        raise ConfigError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    log_k = _log_k(tie_k) if ties == "bt_ties" else 0.0
    labels = _check_inputs(reward_a, reward_b, labels)

    dtype = torch.promote_types(reward_a.dtype, torch.float32)
    diff = reward_a.to(dtype) - reward_b.to(dtype)
    is_tie = labels == PairLabel.TIE
    sign = labels.to(dtype)
    win_gap = sign * diff  # r_winner - r_loser where not a tie
    margin = torch.as_tensor(margin, dtype=dtype, device=diff.device)
    if margin.numel() != 1 and margin.shape != diff.shape:
        raise DataError(
            "pair_loss",
            [f"margin {tuple(margin.shape)} must be a number or match rewards {tuple(diff.shape)}"],
        )

    if ties == "drop":
        mask = ~is_tie
        if not bool(mask.any()):
            raise DataError(
                "pair_loss",
                [
                    f"all {labels.numel()} pair(s) are ties and ties='drop': nothing to train on (use ties='bt_ties')"
                ],
            )
        per_pair = -F.logsigmoid(win_gap - margin)
    else:
        mask = torch.ones_like(is_tie)
        tie_nll = -F.logsigmoid(diff - log_k) - F.logsigmoid(-diff - log_k) - math.log(tie_k**2 - 1)
        per_pair = torch.where(is_tie, tie_nll, -F.logsigmoid(win_gap - margin - log_k))
    per_pair = torch.where(mask, per_pair, torch.zeros_like(per_pair))

    if reduction == "mean":
        loss = per_pair.sum() / mask.sum()
    elif reduction == "sum":
        loss = per_pair.sum()
    else:
        loss = per_pair

    with torch.no_grad():
        gaps = win_gap[~is_tie].detach()
        nan = torch.tensor(math.nan, dtype=dtype, device=diff.device)
        has_gaps = gaps.numel() > 0
        tie_gaps = diff[is_tie].detach().abs()
        return LossOutput(
            loss=loss,
            accuracy=(gaps > 0).to(dtype).mean() if has_gaps else nan,
            margin_mean=gaps.mean() if has_gaps else nan,
            margin_std=gaps.std(correction=0) if has_gaps else nan,
            tie_gap_mean=tie_gaps.mean() if tie_gaps.numel() else nan,
            mask=mask,
            num_pairs=int(mask.sum()),
            num_ties=int(is_tie.sum()),
        )
