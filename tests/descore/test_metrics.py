"""Pair accuracy with and without ties, per-dimension reports and input de-duplication, on hand-computed cases."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from descore.errors import DataError
from descore.metrics import (
    accuracy_with_ties,
    accuracy_without_ties,
    bootstrap_interval,
    evaluate_dimensions,
    label_array,
    pair_inputs,
    unique_inputs,
)
from descore.pairs import PairLabel, PreferencePair


def test_accuracy_without_ties_counts_model_ties_as_not_correct():
    result = accuracy_without_ties([2.0, 1.0, 0.0, 5.0, 3.0], [1.0, 2.0, 0.0, 5.0, 1.0], [1, 1, -1, 0, 1])
    assert (result.correct, result.wrong, result.model_ties) == (2, 1, 1)
    assert (result.num_pairs, result.skipped_ties) == (4, 1)
    assert result.accuracy == pytest.approx(0.5)
    assert result.defined


def test_accuracy_without_ties_is_nan_and_flagged_when_every_pair_is_a_tie(caplog):
    result = accuracy_without_ties([1.0, 2.0], [0.0, 2.0], [0, 0])
    assert math.isnan(result.accuracy) and not result.defined
    assert result.skipped_ties == 2
    assert "undefined" in caplog.text


def test_tie_calibrated_accuracy_hand_computed():
    # d = r_A - r_B = [3, 0.5, -2, 0.1, -0.2]; candidates eps: 0, 0.1, 0.2, 0.5, 2, 3 -> correct 2, 3, 3, 4, 3, 2.
    r_a = [3.0, 1.5, 0.0, 1.1, 0.8]
    r_b = [0.0, 1.0, 2.0, 1.0, 1.0]
    result = accuracy_with_ties(r_a, r_b, [1, 0, -1, 0, 1])
    assert result.epsilon == pytest.approx(0.5)
    assert result.correct == 4 and result.num_pairs == 5
    assert result.accuracy == pytest.approx(0.8)
    assert (result.human_ties, result.predicted_ties) == (2, 3)


def test_tie_threshold_is_the_smallest_of_equally_good_ones():
    result = accuracy_with_ties([1.0, 0.0, 3.0], [0.0, 2.0, 0.0], [1, -1, 1])
    assert result.epsilon == 0.0 and result.accuracy == 1.0 and result.predicted_ties == 0


def test_all_human_ties_picks_the_largest_gap():
    result = accuracy_with_ties([1.0, 0.0, 0.25], [0.0, 0.5, 0.25], [0, 0, 0])
    assert result.epsilon == pytest.approx(1.0) and result.accuracy == 1.0


def test_exact_model_tie_counts_as_a_predicted_tie_at_eps_zero():
    result = accuracy_with_ties([1.0, 2.0], [1.0, 1.0], [0, 1])
    assert result.epsilon == 0.0 and result.accuracy == 1.0


def _brute_force(diff: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    best = (-1.0, 0.0)
    for eps in sorted({0.0, *np.abs(diff).tolist()}):
        predicted = np.where(np.abs(diff) <= eps, 0, np.sign(diff))
        accuracy = float((predicted == labels).mean())
        if accuracy > best[0]:
            best = (accuracy, eps)
    return best


def test_sweep_matches_a_brute_force_sweep_on_random_data():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 60))
        labels = rng.integers(-1, 2, size=n)
        r_a = np.round(rng.normal(size=n), 1)  # rounding makes repeated gaps and exact model ties
        r_b = np.round(rng.normal(size=n) + 0.5 * labels, 1)
        result = accuracy_with_ties(r_a, r_b, labels)
        accuracy, eps = _brute_force(r_a - r_b, labels)
        assert result.accuracy == pytest.approx(accuracy)
        assert result.epsilon == pytest.approx(eps)


def test_torch_and_enum_inputs_are_accepted():
    result = accuracy_without_ties(
        torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), [PairLabel.A, PairLabel.B]
    )
    assert result.accuracy == 1.0


def test_bad_inputs_raise_data_errors():
    with pytest.raises(DataError, match="differ in length"):
        accuracy_without_ties([1.0, 2.0], [1.0], [1, 1])
    with pytest.raises(DataError, match="empty"):
        accuracy_with_ties([], [], [])
    with pytest.raises(DataError, match="non-finite"):
        accuracy_with_ties([float("nan")], [0.0], [1])
    with pytest.raises(DataError, match=r"\[1\] = 3"):
        accuracy_without_ties([1.0, 2.0], [0.0, 0.0], [1, 3])
    with pytest.raises(DataError, match="dtype"):
        label_array(["A", "B"])
    with pytest.raises(DataError, match="1-D"):
        accuracy_without_ties([[1.0]], [[0.0]], [1])


def test_evaluate_dimensions_with_one_reward_or_one_per_dimension():
    labels = {"TA": [1, -1, 0], "VQ": [1, 1, 1]}
    shared = evaluate_dimensions([1.0, 0.0, 0.5], [0.0, 1.0, 0.5], labels)
    assert shared["TA"].without_ties.accuracy == 1.0
    assert shared["TA"].with_ties.accuracy == 1.0
    assert shared["VQ"].without_ties.accuracy == pytest.approx(1 / 3)
    assert shared["VQ"].dimension == "VQ"
    per_dim = evaluate_dimensions(
        {"TA": [1.0, 0.0, 0.5], "VQ": [2.0, 2.0, 2.0]}, {"TA": [0.0, 1.0, 0.5], "VQ": [1.0, 1.0, 1.0]}, labels
    )
    assert per_dim["VQ"].without_ties.accuracy == 1.0
    with pytest.raises(DataError, match="no rewards for dimension 'VQ'"):
        evaluate_dimensions({"TA": [1.0, 0.0, 0.5]}, {"TA": [0.0, 1.0, 0.5]}, labels)


def test_unique_inputs_keeps_first_occurrences_and_maps_back():
    dedup = unique_inputs(["b", "a", "b", "c", "a"])
    assert dedup.unique == ["b", "a", "c"]
    assert dedup.index.tolist() == [0, 1, 0, 2, 1]
    assert dedup.expand([10.0, 20.0, 30.0]).tolist() == [10.0, 20.0, 10.0, 30.0, 20.0]
    by_key = unique_inputs(["Apple", "avocado", "Banana"], key=lambda s: s[0].lower())
    assert by_key.unique == ["Apple", "Banana"] and by_key.index.tolist() == [0, 0, 1]
    with pytest.raises(DataError, match="2 value"):
        dedup.expand([1.0, 2.0])


def test_expand_keeps_tensor_gradients():
    dedup = unique_inputs([1, 2, 1])
    scores = torch.tensor([0.5, 1.5], requires_grad=True)
    dedup.expand(scores).sum().backward()
    assert scores.grad.tolist() == [2.0, 1.0]


def _pair(a: str, b: str, prompt: str, cot_a: str | None = None, cot_b: str | None = None) -> PreferencePair:
    return PreferencePair(
        video_a=Path("/v") / a,
        video_b=Path("/v") / b,
        prompt=prompt,
        labels={"Overall": PairLabel.A},
        line=2,
        cot_a=cot_a,
        cot_b=cot_b,
    )


def test_pair_inputs_scores_each_video_prompt_once():
    pairs = [_pair("x.mp4", "y.mp4", "cat"), _pair("y.mp4", "z.mp4", "cat"), _pair("x.mp4", "y.mp4", "dog")]
    inputs = pair_inputs(pairs)
    assert [(i.video.name, i.prompt) for i in inputs.inputs] == [
        ("x.mp4", "cat"),
        ("y.mp4", "cat"),
        ("z.mp4", "cat"),
        ("x.mp4", "dog"),
        ("y.mp4", "dog"),
    ]
    r_a, r_b = inputs.split(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert r_a.tolist() == [1.0, 2.0, 4.0] and r_b.tolist() == [2.0, 3.0, 5.0]
    t_a, t_b = inputs.split(torch.arange(5.0))
    assert t_a.tolist() == [0.0, 1.0, 3.0] and t_b.tolist() == [1.0, 2.0, 4.0]
    with pytest.raises(DataError, match="3 score"):
        inputs.split([1.0, 2.0, 3.0])


def test_pair_inputs_with_cot_keeps_different_cots_apart():
    pairs = [_pair("x.mp4", "y.mp4", "cat", "cot1", "cot2"), _pair("x.mp4", "z.mp4", "cat", "cot3", "cot4")]
    assert len(pair_inputs(pairs).inputs) == 3
    with_cot = pair_inputs(pairs, with_cot=True)
    assert len(with_cot.inputs) == 4 and with_cot.inputs[2].cot == "cot3"


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_agreement():
    mean, low, high = bootstrap_interval([1.0] * 30)
    assert (mean, low, high) == (1.0, 1.0, 1.0)
    mean, low, high = bootstrap_interval([0.0, 2.0] * 20)
    assert mean == pytest.approx(1.0) and low < 1.0 < high
    with pytest.raises(DataError, match="no values"):
        bootstrap_interval([])
