"""The shipped toy DeScore checkpoint (toyworld/checkpoints/toy_descore) and the recipe that reproduces it."""

from __future__ import annotations

import json

import pytest

from descore.evaluation import evaluate_pairs
from descore.pairs import load_pairs
from descore.scoring import DeScore
from toyworld.dataset import build_dataset
from toyworld.descore_recipe import (
    COMPACT_TEMPLATE,
    DIMENSION,
    SHIPPED_CHECKPOINT,
    TOY_SAMPLING,
    ToyDeScoreRecipe,
    format_report,
    train_toy_descore,
)
from toyworld.generator import WORLD


@pytest.fixture(scope="module")
def scorer() -> DeScore:
    return DeScore.from_pretrained(SHIPPED_CHECKPOINT)


@pytest.fixture(scope="module")
def fresh_pairs(tmp_path_factory):
    """A toy split the checkpoint never saw (another seed), in-domain combinations only, in the generator's world."""
    root = tmp_path_factory.mktemp("fresh")
    summary = build_dataset(
        root, 12, seed=12345, config=WORLD, brief_cot=True, videos_per_prompt=3, split_fractions=(0.0, 1.0, 0.0),
        progress=False,
    )
    return load_pairs(summary.pair_files["test_id"], dimension=DIMENSION)


def test_the_shipped_checkpoint_is_small_and_records_its_settings(scorer):
    """A few MB, the sampling and template it was trained with, and the report of the run that made it."""
    size = sum(f.stat().st_size for f in SHIPPED_CHECKPOINT.iterdir())
    assert size < 12 * 2**20
    assert scorer.config.template == COMPACT_TEMPLATE.name
    assert scorer.config.sampling.max_frames == TOY_SAMPLING["max_frames"]
    report = json.loads((SHIPPED_CHECKPOINT / "report.json").read_text())
    assert {"descore", "discriminative_baseline"} <= set(report["results"])


def test_the_checkpoint_writes_parseable_chains_of_thought(scorer, fresh_pairs):
    pairs = list(fresh_pairs)[:4]
    videos = [str(v) for p in pairs for v in (p.video_a, p.video_b)]
    out = scorer.score(
        videos, [p.prompt for p in pairs for _ in range(2)], think=True, batch_size=8, progress=False
    )
    assert sum(a is not None for a in out.answers) >= 7
    rescored = scorer.score(
        videos,
        [p.prompt for p in pairs for _ in range(2)],
        cots=out.cot_token_ids,
        batch_size=8,
        progress=False,
    )
    assert (rescored.rewards - out.rewards).abs().max() < 1e-4  # the KV-cache score equals a full forward


def test_the_recipe_runs_end_to_end(tmp_path):
    report = train_toy_descore(
        tmp_path / "run", ToyDeScoreRecipe.quick(), export_to=tmp_path / "export", progress=False
    )
    assert set(report["results"]) == {"descore", "descore_stage1", "discriminative_baseline"}
    assert set(report["results"]["descore"]) == {"test_id", "test_ood", "generated_test"}
    assert set(report["results"]["descore"]["test_ood"]) == {"think", "no_think", "given_cot"}
    assert DeScore.from_pretrained(tmp_path / "export").config.template == COMPACT_TEMPLATE.name
    assert "discriminative_baseline" in format_report(report)
