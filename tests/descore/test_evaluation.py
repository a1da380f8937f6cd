"""descore.evaluation: each distinct input scored once, both accuracies per dimension, result and summary files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from descore.errors import ConfigError, DataError
from descore.evaluation import evaluate_pairs, evaluate_with, format_report, write_evaluation
from descore.metrics import accuracy_with_ties, accuracy_without_ties
from descore.pairs import load_pairs
from tests.descore.test_cold_start import tiny_scorer, write_toy_pairs


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture()
def shared_video_pairs(tmp_path) -> Path:
    """Five pairs over four videos (v0 appears in three pairs), two label columns, ties in TA."""
    rows = [
        ("v0", "v1", "p", "A", "A", "good", "bad"),
        ("v0", "v2", "p", "A", "same", "good", "meh"),
        ("v3", "v0", "p", "B", "B", "bad", "good"),
        ("v1", "v2", "p", "B", "same", "awful", "meh"),
        ("v0", "v1", "q", "A", "A", "fine", "poor"),
    ]
    keys = ["path_A", "path_B", "prompt", "Overall", "TA", "CoT_A", "CoT_B"]
    return _write_csv(
        tmp_path / "pairs.csv", [dict(zip(keys, (f"{r[0]}.mp4", f"{r[1]}.mp4", *r[2:]))) for r in rows]
    )


VALUE = {"v0": 3.0, "v1": 1.0, "v2": 1.2, "v3": 0.5}


def _fake_score(calls: list):
    def score(items):
        calls.append(items)
        return [VALUE[item.video.stem] + (0.01 if item.prompt == "q" else 0.0) for item in items], None

    return score


def test_each_distinct_input_is_scored_once_and_accuracies_match_the_metrics(shared_video_pairs):
    pairs = load_pairs(shared_video_pairs, check_videos=False)
    calls: list = []
    evaluation = evaluate_with(_fake_score(calls), pairs, mode="no_think")
    assert len(calls) == 1 and evaluation.num_inputs == 6  # (v0..v3, p) + (v0, q) + (v1, q)
    assert len({(i.video, i.prompt) for i in calls[0]}) == 6
    assert evaluation.reward_a.tolist() == [3.0, 3.0, 0.5, 1.0, 3.01]
    assert evaluation.reward_b.tolist() == [1.0, 1.2, 3.0, 1.2, 1.01]
    assert set(evaluation.dimensions) == {"Overall", "TA"}
    ta = [int(v) for v in pairs.labels("TA")]
    expected_without = accuracy_without_ties(evaluation.reward_a, evaluation.reward_b, ta)
    expected_with = accuracy_with_ties(evaluation.reward_a, evaluation.reward_b, ta)
    assert evaluation.dimensions["TA"].without_ties == expected_without
    assert evaluation.dimensions["TA"].with_ties == expected_with
    # TA ties differ by 1.8 and 0.2, the other pairs by 2.0 or more: the smallest threshold getting all five is 1.8
    assert expected_with.accuracy == 1.0 and expected_with.epsilon == pytest.approx(1.8)
    assert evaluation.dimensions["Overall"].without_ties.accuracy == 1.0
    assert evaluation.cots_a is None

    only = evaluate_with(_fake_score([]), pairs, mode="no_think", dimensions=["TA"])
    assert set(only.dimensions) == {"TA"}


def test_given_cot_inputs_differ_by_their_cot(shared_video_pairs):
    pairs = load_pairs(shared_video_pairs, check_videos=False)
    calls: list = []
    evaluation = evaluate_with(_fake_score(calls), pairs, mode="given_cot")
    assert evaluation.num_inputs == 7  # v1 under p with "bad" and with "awful": two inputs; v0 "good" is one
    assert evaluation.cots_a == ["good", "good", "bad", "awful", "fine"]
    assert all(item.cot is not None for item in calls[0])


def test_bad_requests_are_refused(shared_video_pairs, tmp_path):
    pairs = load_pairs(shared_video_pairs, check_videos=False)
    with pytest.raises(ConfigError, match="no label column 'MQ'"):
        evaluate_with(_fake_score([]), pairs, dimensions=["MQ"])
    with pytest.raises(ConfigError, match="unknown evaluation mode"):
        evaluate_with(_fake_score([]), pairs, mode="sample")
    rows = list(csv.DictReader(shared_video_pairs.open()))
    plain = _write_csv(
        tmp_path / "plain.csv", [{k: r[k] for k in ("path_A", "path_B", "prompt", "TA")} for r in rows]
    )
    with pytest.raises(DataError, match="given-CoT evaluation needs CoT_A and CoT_B"):
        evaluate_with(_fake_score([]), load_pairs(plain, check_videos=False), mode="given_cot")


@pytest.fixture(scope="module")
def toy_pairs(tmp_path_factory) -> Path:
    return write_toy_pairs(tmp_path_factory.mktemp("eval_pairs"), "pairs", 5, seed=4, num_ties=2)


@pytest.fixture(scope="module")
def scorer():
    return tiny_scorer(1)


def test_modes_on_a_real_model_and_the_files_written(scorer, toy_pairs, tmp_path):
    pairs = load_pairs(toy_pairs)
    no_think = evaluate_pairs(scorer, pairs, mode="no_think", batch_size=4, progress=False)
    direct = scorer.score([p.video_a for p in pairs], [p.prompt for p in pairs], think=False, progress=False)
    np.testing.assert_allclose(no_think.reward_a, direct.rewards.numpy(), atol=1e-6)
    assert no_think.num_inputs == 14 and no_think.info["sampling"]["fps"] == 4.0

    given = evaluate_pairs(scorer, pairs, mode="given_cot", batch_size=4, progress=False)
    direct = scorer.score(
        [p.video_b for p in pairs], [p.prompt for p in pairs], cots=[p.cot_b for p in pairs]
    )
    np.testing.assert_allclose(given.reward_b, direct.rewards.numpy(), atol=1e-6)
    assert not np.allclose(given.reward_b, no_think.reward_b)

    think = evaluate_pairs(
        scorer, pairs, mode="think", batch_size=4, generation={"max_new_tokens": 6}, progress=False
    )
    assert all(isinstance(c, str) for c in think.cots_a + think.cots_b)
    direct = scorer.score(
        [p.video_a for p in pairs], [p.prompt for p in pairs], think=True, generation={"max_new_tokens": 6}
    )
    np.testing.assert_allclose(think.reward_a, direct.rewards.numpy(), atol=1e-5)
    assert think.cots_a == direct.cots

    results, summary_path = write_evaluation(think, pairs, tmp_path / "out", info={"model": "tiny"})
    assert results.name == "results.csv"
    reloaded = load_pairs(results)  # the result file is a valid pair file, videos still resolve
    assert [p.video_a for p in reloaded] == [p.video_a for p in pairs]
    rows = list(csv.DictReader(results.open()))
    np.testing.assert_allclose([float(r["Reward_A"]) for r in rows], think.reward_a)
    np.testing.assert_allclose([float(r["Reward_B"]) for r in rows], think.reward_b)
    assert [r["CoT_A"] for r in rows] == think.cots_a
    summary = json.loads(summary_path.read_text())
    assert summary["mode"] == "think" and summary["model"] == "tiny" and summary["num_pairs"] == 7
    overall = summary["dimensions"]["Overall"]
    assert overall["with_ties"]["human_ties"] == 2 and overall["with_ties"]["num_pairs"] == 7
    assert overall["without_ties"]["num_pairs"] == 5 and "epsilon" in overall["with_ties"]
    assert "Overall: accuracy w/o ties" in format_report(think)


def test_jsonl_pair_files_give_jsonl_results(scorer, toy_pairs, tmp_path):
    rows = list(csv.DictReader(toy_pairs.open()))
    jsonl = toy_pairs.with_name("pairs.jsonl")
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    pairs = load_pairs(jsonl)
    evaluation = evaluate_pairs(scorer, pairs, mode="no_think", progress=False)
    results, _ = write_evaluation(evaluation, pairs, tmp_path / "out")
    assert results.name == "results.jsonl"
    written = [json.loads(line) for line in results.read_text().splitlines()]
    assert [w["Reward_A"] for w in written] == pytest.approx(evaluation.reward_a.tolist())
    assert torch.isfinite(torch.tensor([w["Reward_B"] for w in written])).all()
