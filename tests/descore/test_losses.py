"""Pair losses: hand-computed values and gradients, Rao-Kupper probabilities, tie handling, margins, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from descore.errors import ConfigError, DataError
from descore.losses import pair_loss, rao_kupper_probabilities
from descore.pairs import PairLabel

K = 5.0
LOG_K = math.log(K)


def _rewards(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.mark.parametrize("d", [0.0, 1.0, -2.5, LOG_K])
def test_bradley_terry_value_and_gradient(d):
    r_a, r_b = _rewards(d), _rewards(0.0)
    out = pair_loss(r_a, r_b, torch.tensor([1]))
    assert out.loss.item() == pytest.approx(-math.log(_sigmoid(d)))
    out.loss.backward()
    assert r_a.grad.item() == pytest.approx(-(1 - _sigmoid(d)))
    assert r_b.grad.item() == pytest.approx(1 - _sigmoid(d))


def test_bradley_terry_at_zero_is_log_two_and_b_label_swaps_sides():
    out = pair_loss(_rewards(0.3), _rewards(0.3), [PairLabel.A])
    assert out.loss.item() == pytest.approx(math.log(2))
    a_wins = pair_loss(_rewards(2.0), _rewards(1.0), [1]).loss
    b_wins = pair_loss(_rewards(1.0), _rewards(2.0), [-1]).loss
    assert a_wins.item() == pytest.approx(b_wins.item()) == pytest.approx(-math.log(_sigmoid(1.0)))


def test_margin_shifts_the_gap_scalar_and_per_pair():
    out = pair_loss(_rewards(1.0), _rewards(0.0), [1], margin=1.0)
    assert out.loss.item() == pytest.approx(math.log(2))
    per_pair = pair_loss(
        _rewards(1.0, 0.0), _rewards(0.0, 2.0), [1, -1], margin=torch.tensor([1.0, 0.5]), reduction="none"
    )
    expected = [math.log(2), -math.log(_sigmoid(1.5))]
    assert per_pair.loss.tolist() == pytest.approx(expected)


def test_ties_dropped_from_mean_and_flagged_in_mask():
    r_a, r_b = _rewards(1.0, 5.0, 0.0), _rewards(0.0, -3.0, 2.0)
    out = pair_loss(r_a, r_b, [1, 0, -1])
    expected = (-math.log(_sigmoid(1.0)) - math.log(_sigmoid(2.0))) / 2
    assert out.loss.item() == pytest.approx(expected)
    assert out.mask.tolist() == [True, False, True]
    assert (out.num_pairs, out.num_ties) == (2, 1)
    out.loss.backward()
    assert r_a.grad[1].item() == 0.0 and r_b.grad[1].item() == 0.0
    none = pair_loss(r_a, r_b, [1, 0, -1], reduction="none").loss
    assert none[1].item() == 0.0 and none.shape == (3,)
    total = pair_loss(r_a, r_b, [1, 0, -1], reduction="sum").loss
    assert total.item() == pytest.approx(2 * expected)


def test_all_ties_dropped_is_an_error_but_bt_ties_trains_on_them():
    with pytest.raises(DataError, match="all 2 pair.*ties"):
        pair_loss(_rewards(1.0, 2.0), _rewards(0.0, 2.0), [0, 0])
    out = pair_loss(_rewards(1.0, 2.0), _rewards(0.0, 2.0), [0, 0], ties="bt_ties")
    assert out.num_pairs == 2 and math.isnan(out.accuracy.item())


def test_bt_ties_non_tie_value_and_gradient_at_d_equal_log_k():
    r_a = _rewards(LOG_K)
    out = pair_loss(r_a, _rewards(0.0), [1], ties="bt_ties", tie_k=K)
    assert out.loss.item() == pytest.approx(math.log(2))
    out.loss.backward()
    assert r_a.grad.item() == pytest.approx(-0.5)


@pytest.mark.parametrize("d", [0.0, 1.0, LOG_K, -0.7])
def test_bt_ties_tie_value_and_gradient(d):
    r_a = _rewards(d)
    out = pair_loss(r_a, _rewards(0.0), [0], ties="bt_ties", tie_k=K)
    expected = -math.log(_sigmoid(d - LOG_K)) - math.log(_sigmoid(-d - LOG_K)) - math.log(K**2 - 1)
    assert out.loss.item() == pytest.approx(expected)
    out.loss.backward()
    # d/dd: -(1 - sigmoid(d - log k)) + (1 - sigmoid(-d - log k))
    assert r_a.grad.item() == pytest.approx(-_sigmoid(LOG_K - d) + _sigmoid(d + LOG_K))


def test_tie_loss_closed_forms():
    at_zero = pair_loss(_rewards(0.0), _rewards(0.0), [0], ties="bt_ties", tie_k=K).loss.item()
    assert at_zero == pytest.approx(math.log((K + 1) / (K - 1)))  # = log 1.5: the most likely tie
    at_log_k = pair_loss(_rewards(LOG_K), _rewards(0.0), [0], ties="bt_ties", tie_k=K).loss.item()
    assert at_log_k == pytest.approx(math.log(2 * (K**2 + 1) / (K**2 - 1)))
    assert at_zero < at_log_k


@pytest.mark.parametrize("k", [1.5, 5.0, 20.0])
def test_rao_kupper_outcomes_sum_to_one_and_match_the_losses(k):
    d = torch.linspace(-8, 8, 33, dtype=torch.float64)
    p_a, p_tie, p_b = rao_kupper_probabilities(d, k)
    assert torch.allclose(p_a + p_tie + p_b, torch.ones_like(d), atol=1e-12)
    # Direct Rao-Kupper with strengths exp(r): a / (a + k b), (k^2 - 1) a b / ((a + k b)(b + k a)).
    a, b = d.exp(), torch.ones_like(d)
    assert torch.allclose(p_a, a / (a + k * b))
    assert torch.allclose(p_tie, (k**2 - 1) * a * b / ((a + k * b) * (b + k * a)))
    zeros = torch.zeros_like(d)
    for label, prob in ((1, p_a), (0, p_tie), (-1, p_b)):
        nll = pair_loss(
            d, zeros, torch.full_like(d, label, dtype=torch.long), ties="bt_ties", tie_k=k, reduction="none"
        )
        assert torch.allclose((-nll.loss).exp(), prob, atol=1e-12)
        assert bool((nll.loss >= -1e-12).all())


def test_extreme_gaps_stay_finite():
    r_a = _rewards(1000.0, -1000.0, 1000.0)
    r_b = _rewards(-1000.0, 1000.0, -1000.0)
    for ties in ("drop", "bt_ties"):
        out = pair_loss(r_a, r_b, [1, 1, 0], ties=ties)
        out.loss.backward()
        assert math.isfinite(out.loss.item())
        assert torch.isfinite(r_a.grad).all()
        r_a.grad = None


def test_statistics_accuracy_and_margins():
    out = pair_loss(_rewards(3.0, 0.0, 1.0, 4.0, 2.0), _rewards(1.0, 1.0, 1.0, 4.5, 2.0), [1, 1, -1, 0, 0])
    # winner gaps: 2, -1, 0 -> accuracy 1/3 (an exact tie of rewards is not correct); tie gaps 0.5, 0
    assert out.accuracy.item() == pytest.approx(1 / 3)
    assert out.margin_mean.item() == pytest.approx(1 / 3)
    assert out.margin_std.item() == pytest.approx(torch.tensor([2.0, -1.0, 0.0]).std(correction=0).item())
    assert out.tie_gap_mean.item() == pytest.approx(0.25)
    assert not out.accuracy.requires_grad


def test_low_precision_rewards_are_computed_in_float32_and_get_gradients():
    r_a = torch.tensor([0.5, -0.25], dtype=torch.bfloat16, requires_grad=True)
    r_b = torch.tensor([0.0, 0.0], dtype=torch.bfloat16, requires_grad=True)
    out = pair_loss(r_a, r_b, [1, -1], ties="bt_ties")
    assert out.loss.dtype == torch.float32
    out.loss.backward()
    assert r_a.grad.dtype == torch.bfloat16 and torch.all(r_a.grad != 0)
    reference = (-F.logsigmoid(torch.tensor([0.5 - LOG_K, 0.25 - LOG_K]))).mean()
    assert out.loss.item() == pytest.approx(reference.item(), rel=1e-6)


def test_bad_inputs_raise_clear_errors():
    r = _rewards(1.0, 2.0)
    with pytest.raises(DataError, match=r"reward_a \(2,\), reward_b \(3,\) and labels \(2,\)"):
        pair_loss(r, _rewards(1.0, 2.0, 3.0), [1, 1])
    with pytest.raises(DataError, match="same shape"):
        pair_loss(r.reshape(2, 1), r.reshape(2, 1), [1, 1])
    with pytest.raises(DataError, match=r"1 label\(s\) not in .*\[1\] = 2"):
        pair_loss(r, r, [1, 2])
    with pytest.raises(DataError, match="integers"):
        pair_loss(r, r, torch.tensor([1.0, 0.0]))
    with pytest.raises(DataError, match="floating-point"):
        pair_loss(torch.tensor([1, 2]), r, [1, 1])
    with pytest.raises(DataError, match="empty"):
        pair_loss(_rewards(), _rewards(), torch.tensor([], dtype=torch.long))
    with pytest.raises(DataError, match="margin"):
        pair_loss(r, r, [1, 1], margin=torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ConfigError, match="tie_k"):
        pair_loss(r, r, [1, 0], ties="bt_ties", tie_k=1.0)
    with pytest.raises(ConfigError, match="ties"):
        pair_loss(r, r, [1, 0], ties="keep")
    with pytest.raises(ConfigError, match="reduction"):
        pair_loss(r, r, [1, 0], reduction="max")
