"""Per-prompt group statistics: advantages, RWR weights, best-of-group, DPO pairs."""

import pytest
import torch

from descore.errors import ConfigError
from recipes.groups import (
    all_pairs,
    best_of_group_weights,
    best_worst_pairs,
    group_advantages,
    group_softmax_weights,
)

REWARDS = torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 5.0])
GROUPS = torch.tensor([0, 0, 0, 1, 1, 1])


def test_group_advantages_are_normalised_within_groups_and_clipped():
    adv = group_advantages(REWARDS, GROUPS)
    std = torch.tensor([1.0, 2.0, 3.0]).std(unbiased=False)
    assert torch.allclose(adv[:3], torch.tensor([-1.0, 0.0, 1.0]) / (std + 1e-4))
    assert torch.equal(adv[3:], torch.zeros(3))  # a tied group teaches nothing
    assert (
        group_advantages(torch.tensor([0.0, 1.0]), torch.tensor([0, 0]), eps=0.0, clip=0.5).abs().max() == 0.5
    )
    global_adv = group_advantages(REWARDS, GROUPS, global_std=True)
    assert torch.allclose(
        global_adv[:3], torch.tensor([-1.0, 0.0, 1.0]) / (REWARDS.std(unbiased=False) + 1e-4)
    )
    with pytest.raises(ConfigError, match="at least 2"):
        group_advantages(torch.tensor([1.0, 2.0]), torch.tensor([0, 1]))


def test_softmax_and_best_of_group_weights():
    weights = group_softmax_weights(REWARDS, GROUPS, beta=1.0)
    assert torch.allclose(weights[:3], torch.softmax(REWARDS[:3], 0) * 3)
    assert torch.allclose(weights[3:], torch.ones(3))
    assert torch.allclose(
        group_softmax_weights(REWARDS, GROUPS, beta=1e-3)[:3], torch.tensor([0.0, 0.0, 3.0])
    )
    assert torch.equal(best_of_group_weights(REWARDS, GROUPS), torch.tensor([0.0, 0.0, 3.0, 3.0, 0.0, 0.0]))
    with pytest.raises(ConfigError, match="beta"):
        group_softmax_weights(REWARDS, GROUPS, beta=0.0)


def test_best_worst_pairs_skip_ties_and_small_gaps():
    winners, losers = best_worst_pairs(REWARDS, GROUPS)
    assert winners.tolist() == [2] and losers.tolist() == [0]
    winners, _ = best_worst_pairs(REWARDS, GROUPS, min_gap=2.5)
    assert winners.tolist() == []


def test_all_pairs_orders_every_untied_pair_of_a_group():
    rewards = torch.tensor([1.0, 3.0, 2.0, 5.0, 5.0, 4.0])
    winners, losers = all_pairs(rewards, GROUPS)
    # Group 0: (3 > 1), (2 > 1), (3 > 2); group 1: the tied 5s give no pair, each 5 beats the 4.
    assert list(zip(winners.tolist(), losers.tolist())) == [(1, 0), (2, 0), (1, 2), (3, 5), (4, 5)]
    winners, losers = all_pairs(rewards, GROUPS, min_gap=1.5)
    assert list(zip(winners.tolist(), losers.tolist())) == [(1, 0)]
