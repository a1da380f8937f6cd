"""bench/regression_fit.py: the oracle rejection fine-tuning it measures really trains on the kept videos."""

from __future__ import annotations

import math


def test_training_on_the_kept_videos_lowers_their_denoising_error(load_bench):
    bench = load_bench("regression_fit")
    result = bench.measure(prompts=2, group=2, passes=30, lr=3e-3, fresh=1)
    assert len(result["kept_scores"]) == 2
    assert all(k >= m for k, m in zip(result["kept_scores"], result["group_mean_scores"]))
    trained, base = result["trained"], result["base"]
    # The base model is the adapter disabled: a LoRA that did not train, or was not disabled, would tie.
    assert trained["denoising_error"]["0.5"] < 0.95 * base["denoising_error"]["0.5"]
    for side in (trained, base):
        assert math.isfinite(side["distance_to_kept"]) and 1.0 <= side["fresh_quality"] <= 5.0
