"""bench/gpu_wan.py at its tiny size on the CPU: every section runs through the real pipeline, reward and recipe
code and writes its records (the GPU check runs the same code on the Wan2.1-1.3B architecture)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest


@pytest.mark.slow
def test_tiny_cpu_run_records_every_section(load_bench, tmp_path: Path) -> None:
    bench = load_bench("gpu_wan")
    assert bench.main(["--size", "tiny", "--device", "cpu", "--out", str(tmp_path)]) == 0
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert not [r for r in records if "error" in r]
    sections = {r["section"] for r in records}
    assert {"env", "build", "bon", "guidance", "grpo"} <= sections

    best = [r for r in records if r["case"].startswith("best-of-4")]
    assert len(best) == 4  # toy think-free, cascade, think, and the Qwen3-VL judge
    for record in best:
        rewards = [-math.inf if math.isnan(r) else r for r in record["rewards"]]
        assert record["winner"] == rewards.index(max(rewards))
        assert record["peak_gib"] is None  # no CUDA: no memory figure rather than a wrong one

    guided = [r for r in records if r["section"] == "guidance" and "guided_step_seconds" in r]
    assert len(guided) == 9  # warm-up + 4 settings x 2 rewards
    assert all(len(r["guided_step_seconds"]) == 1 and r["guided_step_seconds"][0] > 0 for r in guided)

    (overhead,) = [r for r in records if r["case"].startswith("rollout with log-probs")]
    assert all(len(overhead["seconds"][name]) == 3 for name in ("plain", "rollout"))
    assert overhead["ratio"] == overhead["rollout_s"] / overhead["plain_s"] > 0

    updates = [r for r in records if r["case"].startswith("one update")]
    assert [r["case"].rsplit(", ", 1)[1] for r in updates] == ["first (warm-up)", "second"]
    for update in updates:
        assert update["metrics"]["time/rollout_s"] > 0 and update["metrics"]["time/train_s"] > 0
        assert update["metrics"]["train/grad_norm"] > 0


def test_architectures_match_the_released_models(load_bench, tmp_path: Path) -> None:
    """On the meta device (no memory): the parameter counts of Wan2.1-T2V-1.3B, UMT5-XXL and Qwen3-VL-8B."""
    bench = load_bench("gpu_wan")
    assert bench.main(["--size", "wan1.3b", "--device", "meta", "--out", str(tmp_path)]) == 0
    records = {r["case"]: r for r in map(json.loads, (tmp_path / "results.jsonl").read_text().splitlines())}
    counts = records["Wan2.1 pipeline"]["parameters"]
    assert round(counts["transformer"] / 1e9, 2) == 1.42
    assert round(counts["text_encoder"] / 1e9, 2) == 5.68
    assert round(counts["vae"] / 1e6) == 127
    assert round(records["judge"]["parameters"] / 1e9, 2) == 8.77
    assert 500 <= records["judge"]["input_tokens"] <= 2000
