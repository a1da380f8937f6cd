"""Per-prompt group statistics: GRPO advantages, RWR weights, best-of-group selection and DPO pairs.

Samples of one update are laid out in groups: ``group_ids[i]`` names the prompt group of sample ``i`` (the G samples
of one prompt share an id). Every statistic is computed within a group, so prompts of different difficulty do not
drown each other out.
"""

from __future__ import annotations

import torch

from descore.errors import ConfigError


def _groups(group_ids: torch.Tensor) -> list[torch.Tensor]:
    return [torch.nonzero(group_ids == g).flatten() for g in torch.unique(group_ids)]


def group_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    *,
    eps: float = 1e-4,
    clip: float = 5.0,
    global_std: bool = False,
) -> torch.Tensor:
    """GRPO advantages ``(r - mean_group) / (std_group + eps)``, clipped to ``+-clip``.

    ``global_std`` divides by the std of the whole batch instead (Flow-GRPO's option for groups whose rewards tie).
    """
    rewards = rewards.float()
    advantages = torch.empty_like(rewards)
    batch_std = rewards.std(unbiased=False)
    for index in _groups(group_ids):
        if len(index) < 2:
            raise ConfigError("group_size: GRPO needs at least 2 samples per prompt to compare them")
        values = rewards[index]
        std = batch_std if global_std else values.std(unbiased=False)
        advantages[index] = (values - values.mean()) / (std + eps)
    return advantages.clamp(-clip, clip)


def group_softmax_weights(rewards: torch.Tensor, group_ids: torch.Tensor, beta: float) -> torch.Tensor:
    """Reward-weighted regression weights: ``softmax(r / beta)`` within each group, scaled so a group sums to its size.

    Scaling by the group size keeps the loss on the scale of the unweighted flow-matching loss (uniform rewards give
    weight 1 everywhere).
    """
    if beta <= 0:
        raise ConfigError(f"beta: the RWR temperature must be positive, got {beta}")
    weights = torch.empty_like(rewards, dtype=torch.float32)
    for index in _groups(group_ids):
        weights[index] = torch.softmax(rewards[index].float() / beta, dim=0) * len(index)
    return weights


def best_of_group_weights(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Rejection fine-tuning: weight ``group size`` on each group's best sample (first on ties), 0 elsewhere."""
    weights = torch.zeros_like(rewards, dtype=torch.float32)
    for index in _groups(group_ids):
        weights[index[torch.argmax(rewards[index])]] = float(len(index))
    return weights


def best_worst_pairs(
    rewards: torch.Tensor, group_ids: torch.Tensor, min_gap: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Online DPO pairs: (winner, loser) indices, each group's best and worst sample when their rewards differ by
    more than ``min_gap`` (groups whose samples tie give no pair)."""
    winners, losers = [], []
    for index in _groups(group_ids):
        values = rewards[index]
        best, worst = index[torch.argmax(values)], index[torch.argmin(values)]
        if float(rewards[best] - rewards[worst]) > min_gap:
            winners.append(int(best))
            losers.append(int(worst))
    return torch.tensor(winners, dtype=torch.long), torch.tensor(losers, dtype=torch.long)


def all_pairs(
    rewards: torch.Tensor, group_ids: torch.Tensor, min_gap: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Online DPO pairs: every (winner, loser) of two samples of one group whose rewards differ by more than
    ``min_gap`` (a group of G distinct rewards gives G (G - 1) / 2 pairs), in group order."""
    winners, losers = [], []
    for index in _groups(group_ids):
        for a in range(len(index)):
            for b in range(a + 1, len(index)):
                i, j = int(index[a]), int(index[b])
                gap = float(rewards[i] - rewards[j])
                if abs(gap) > min_gap:
                    winners.append(i if gap > 0 else j)
                    losers.append(j if gap > 0 else i)
    return torch.tensor(winners, dtype=torch.long), torch.tensor(losers, dtype=torch.long)
