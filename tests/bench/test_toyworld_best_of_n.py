"""The gain interval of bench/toyworld_best_of_n.py: the pick's mean gain over a random pick and its bootstrap bounds."""

from __future__ import annotations

import pytest

from toyworld.demo import Candidate, DemoReport, PromptResult


def report(truths: list[list[float]], winners: list[int]) -> DemoReport:
    results = [
        PromptResult(
            prompt=f"prompt {i}",
            candidates=[
                Candidate(seed=j, reward=0.0, cot=None, truth=t, findings=(), gif=None)
                for j, t in enumerate(ts)
            ],
            winner=w,
        )
        for i, (ts, w) in enumerate(zip(truths, winners))
    ]
    return DemoReport(results=results)


def test_gain_is_the_mean_pick_minus_the_candidates_mean(load_bench):
    bench = load_bench("toyworld_best_of_n")
    # Picks 3.0 of (1, 3) and 1.0 of (1, 2): gains +1.0 and -0.5.
    gain, low, high = bench.gain_interval(report([[1.0, 3.0], [1.0, 2.0]], [1, 0]))
    assert gain == pytest.approx(0.25)
    assert low == pytest.approx(-0.5) and high == pytest.approx(1.0)


def test_interval_excludes_zero_only_for_a_consistent_gain(load_bench):
    bench = load_bench("toyworld_best_of_n")
    always_best = report([[1.0, 2.0, 3.0]] * 40, [2] * 40)
    gain, low, high = bench.gain_interval(always_best)
    assert gain == pytest.approx(1.0) and low == pytest.approx(1.0) and high == pytest.approx(1.0)
    # Best and worst alternate: mean gain 0, and the interval straddles it.
    mixed = report([[1.0, 2.0, 3.0]] * 40, [2, 0] * 20)
    gain, low, high = bench.gain_interval(mixed)
    assert gain == pytest.approx(0.0) and low < 0.0 < high
