"""The printed metrics of bench/recipe_runs.py."""

from __future__ import annotations


def test_gradient_norms_print_in_scientific_notation(load_bench):
    bench = load_bench("recipe_runs")
    # Flow-GRPO's toy gradients are about 1e-7: three decimals would print 0.000.
    assert bench._metric("grad_norm", 1.234e-7) == "grad_norm 1.23e-07"
    assert bench._metric("update", 4) == "update 4"
    assert bench._metric("true_quality", 1.9334) == "true_quality 1.933"
