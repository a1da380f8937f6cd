"""The figures of bench/toyworld_best_of_n.py: the pick's gain over a random pick (at best of k), its bootstrap
interval, and the within-prompt rank correlation of reward and analyzer score."""

from __future__ import annotations

import numpy as np
import pytest

from toyworld.demo import Candidate, DemoReport, PromptResult


def row(rewards: list[float], truths: list[float]) -> dict[str, list[float]]:
    return {"rewards": rewards, "truths": truths}


def test_the_table_holds_every_candidate_in_order(load_bench):
    bench = load_bench("toyworld_best_of_n")
    candidates = [
        Candidate(seed=j, reward=r, cot=None, truth=t, findings=(), gif=None)
        for j, (r, t) in enumerate([(0.5, 2.0), (-1.0, 3.0)])
    ]
    report = DemoReport(results=[PromptResult(prompt="p", candidates=candidates, winner=0)])
    assert bench.candidate_table(report) == [row([0.5, -1.0], [2.0, 3.0])]


def test_gain_is_the_pick_minus_the_candidates_mean(load_bench):
    bench = load_bench("toyworld_best_of_n")
    # Picks 3.0 of (1, 3) and 1.0 of (1, 2): gains +1.0 and -0.5.
    gains = bench.pick_gains([row([0.0, 1.0], [1.0, 3.0]), row([1.0, 0.0], [1.0, 2.0])])
    assert gains.tolist() == [1.0, -0.5]
    gain, low, high = bench.bootstrap_interval(gains)
    assert gain == pytest.approx(0.25)
    assert low == pytest.approx(-0.5) and high == pytest.approx(1.0)


def test_best_of_k_reads_only_the_first_k_candidates(load_bench):
    bench = load_bench("toyworld_best_of_n")
    table = [row([0.0, 1.0, 5.0], [1.0, 3.0, 2.0])]
    assert bench.pick_gains(table, 2).tolist() == [1.0]  # 3 of (1, 3)
    assert bench.pick_gains(table).tolist() == [0.0]  # 2 of (1, 3, 2)


def test_interval_excludes_zero_only_for_a_consistent_gain(load_bench):
    bench = load_bench("toyworld_best_of_n")
    always_best = bench.pick_gains([row([0.0, 1.0, 2.0], [1.0, 2.0, 3.0])] * 40)
    gain, low, high = bench.bootstrap_interval(always_best)
    assert gain == pytest.approx(1.0) and low == pytest.approx(1.0) and high == pytest.approx(1.0)
    # Best and worst alternate: mean gain 0, and the interval straddles it.
    mixed = bench.pick_gains(
        [row([0.0, 1.0, 2.0], [1.0, 2.0, 3.0]), row([2.0, 1.0, 0.0], [1.0, 2.0, 3.0])] * 20
    )
    gain, low, high = bench.bootstrap_interval(mixed)
    assert gain == pytest.approx(0.0) and low < 0.0 < high


def test_rank_correlation_per_prompt(load_bench):
    bench = load_bench("toyworld_best_of_n")
    table = [
        row([0.1, 0.5, 0.9], [1.0, 2.0, 4.0]),  # same order: +1
        row([0.9, 0.5, 0.1], [1.0, 2.0, 4.0]),  # reversed: -1
        row([0.1, 0.5, 0.9], [2.0, 2.0, 2.0]),  # all candidates score the same: left out
        row([0.1, 0.2, 0.3], [1.0, 1.0, 3.0]),  # tied truths share their rank
    ]
    correlations = bench.rank_correlations(table)
    assert correlations[:2].tolist() == pytest.approx([1.0, -1.0])
    assert len(correlations) == 3
    expected = np.corrcoef([0.0, 1.0, 2.0], [0.5, 0.5, 2.0])[0, 1]
    assert correlations[2] == pytest.approx(expected)


def test_saved_candidates_rescore_to_the_rewards_of_the_run(load_bench, tmp_path):
    from toyworld.demo import run_demo

    bench = load_bench("toyworld_best_of_n")
    report = run_demo(
        num_prompts=2,
        num_candidates=3,
        seed=5,
        guidance_prompts=0,
        gifs=False,
        keep_videos=True,
        progress=False,
    )
    bench.save_candidates(report, tmp_path / "candidates.npz")
    saved = bench.load_candidates(tmp_path / "candidates.npz")
    assert saved["frames"].shape[:3] == (2, 3, report.results[0].candidates[0].video.shape[0])
    assert saved["prompts"].tolist() == [r.prompt for r in report.results]
    assert saved["seeds"].tolist() == [[c.seed for c in r.candidates] for r in report.results]
    rescored_report = bench.rescore([str(tmp_path / "candidates.npz")], None, True)
    assert [r.winner for r in rescored_report.results] == [r.winner for r in report.results]
    table, rescored = bench.candidate_table(report), bench.candidate_table(rescored_report)
    assert [row["truths"] for row in rescored] == [row["truths"] for row in table]
    assert np.allclose([row["rewards"] for row in rescored], [row["rewards"] for row in table], atol=1e-4)


def test_saving_needs_the_frames(load_bench, tmp_path):
    bench = load_bench("toyworld_best_of_n")
    candidates = [Candidate(seed=0, reward=0.0, cot=None, truth=1.0, findings=(), gif=None)]
    with pytest.raises(ValueError, match="keep_videos=True"):
        bench.save_candidates(DemoReport(results=[PromptResult("p", candidates, 0)]), tmp_path / "c.npz")


def test_a_file_that_is_not_saved_candidates_is_named(load_bench, tmp_path):
    from descore.errors import DataError

    bench = load_bench("toyworld_best_of_n")
    np.savez(tmp_path / "other.npz", frames=np.zeros((1, 2, 3, 3, 4, 4)), truths=np.zeros((1, 2)))
    with pytest.raises(DataError, match=r"other\.npz(.|\n)*missing arrays \['prompts', 'seeds'\]"):
        bench.load_candidates(tmp_path / "other.npz")
    np.savez(
        tmp_path / "bad.npz",
        frames=np.zeros((1, 2, 3, 3, 4, 4)),
        truths=np.zeros((1, 3)),
        prompts=np.array(["p"]),
        seeds=np.zeros((1, 2)),
    )
    with pytest.raises(DataError, match=r"bad\.npz(.|\n)*truths has shape \(1, 3\), expected \(1, 2\)"):
        bench.load_candidates(tmp_path / "bad.npz")


def test_dimension_correlations_skip_prompts_where_a_dimension_does_not_apply(load_bench):
    bench = load_bench("toyworld_best_of_n")
    table = [row([0.1, 0.5, 0.9], [1.0, 2.0, 3.0]), row([0.9, 0.5, 0.1], [1.0, 2.0, 3.0])]
    subscores = {"style": [[0, 1, 2], [0, 1, 2]], "camera": [[0, None, 2], [2, 1, 0]]}
    correlations = bench.dimension_correlations(table, subscores)
    assert correlations["style"].tolist() == pytest.approx([1.0, -1.0])
    assert correlations["camera"].tolist() == pytest.approx([1.0])  # the first prompt has an N/A


def test_saved_candidates_become_analyzer_labelled_pairs(load_bench, tmp_path):
    from descore.answer import DIMENSIONS
    from descore.pairs import load_pairs
    from toyworld.analyzer import analyze
    from toyworld.generator import toy_prompts
    from toyworld.render import render
    from toyworld.scene import WorldConfig, sample_scene

    bench = load_bench("toyworld_best_of_n")
    config = WorldConfig(height=48, width=48)
    rng = np.random.default_rng(0)
    frames = render([sample_scene(rng, config) for _ in range(6)], config).reshape(2, 3, -1, 3, 48, 48)
    prompts = toy_prompts(2, seed=3)
    for name in ("s1", "s2"):
        np.savez(
            tmp_path / f"{name}.npz",
            frames=frames,
            truths=np.zeros((2, 3)),
            prompts=np.array(prompts),
            seeds=np.arange(6).reshape(2, 3),
        )
    merged = bench.write_pairs([str(tmp_path / "s1.npz"), str(tmp_path / "s2.npz")], tmp_path / "pairs")
    pairs = load_pairs(merged, dimension="Overall")
    assert len(pairs) == 2 * 2 * 3  # two files, two prompts, every two of three candidates
    assert {p.video_a.parent.parent.parent.parent.name for p in pairs} == {"s1", "s2"}
    for pair in pairs[:3]:
        assert pair.gt_subscores_a == {d: analyze(pair.video_a, pair.prompt).subscores[d] for d in DIMENSIONS}
    # An interrupted run resumes: files whose pairs are written are kept, the rest are written.
    kept = (tmp_path / "pairs" / "s1" / "generated_train.csv").stat().st_mtime_ns
    for written in (tmp_path / "pairs" / "s2").glob(
        "generated_*.csv"
    ):  # s2 stopped before its pairs were written
        written.unlink()
    again = bench.write_pairs([str(tmp_path / "s1.npz"), str(tmp_path / "s2.npz")], tmp_path / "pairs")
    assert (tmp_path / "pairs" / "s1" / "generated_train.csv").stat().st_mtime_ns == kept
    assert again.read_text() == merged.read_text()
