"""The shipped toy DeScore checkpoint (toyworld/checkpoints/toy_descore) and the recipe that reproduces it."""

from __future__ import annotations

import json
import shutil

import av
import pytest
import yaml

from descore.errors import ConfigError
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
        root,
        12,
        seed=12345,
        config=WORLD,
        cot_style="brief",
        videos_per_prompt=3,
        split_fractions=(0.0, 1.0, 0.0),
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
    recipe = ToyDeScoreRecipe.quick()
    recipe.vision_pretraining = {"steps": 2, "batch_size": 4, "eval_clips": 8}
    report = train_toy_descore(tmp_path / "run", recipe, export_to=tmp_path / "export", progress=False)
    assert "vision" in report["seconds"]
    sft = yaml.safe_load((tmp_path / "run" / "configs" / "sft.yaml").read_text())
    assert sft["model"] == str(tmp_path / "run" / "vision")
    assert set(report["results"]) == {"descore", "descore_stage1", "discriminative_baseline"}
    assert set(report["results"]["descore"]) == {"test_id", "test_ood", "generated_test"}
    assert set(report["results"]["descore"]["test_ood"]) == {"think", "no_think", "given_cot"}
    assert DeScore.from_pretrained(tmp_path / "export").config.template == COMPACT_TEMPLATE.name
    head = "score_head.safetensors"  # the export is stage 1's model (export_stage)
    assert (tmp_path / "export" / head).read_bytes() == (
        tmp_path / "run" / "stage1" / "final" / head
    ).read_bytes()
    assert "discriminative_baseline" in format_report(report)
    with av.open(str(next((tmp_path / "run" / "data" / "videos" / "generated").rglob("*.mp4")))) as container:
        assert (
            container.streams.video[0].codec_context.pix_fmt == "gbrp"
        )  # on-policy samples stored losslessly
    sft_rows = (tmp_path / "run" / "data" / "generated_train.csv").read_text()
    assert sft["train_file"].endswith("generated_train.csv") and sft["streamed_per_batch"] == 2
    assert " vs " in sft_rows and "<answer>" in sft_rows  # track CoTs

    # An interrupted run resumes: finished phases are kept, the missing ones run again.
    with pytest.raises(ConfigError, match="not empty"):
        train_toy_descore(tmp_path / "run", recipe, progress=False)
    shutil.rmtree(tmp_path / "run" / "stage2")  # as if it crashed during stage 2
    timings = json.loads((tmp_path / "run" / "timings.json").read_text())
    del timings["stage2"]
    (tmp_path / "run" / "timings.json").write_text(json.dumps(timings))
    resumed = train_toy_descore(tmp_path / "run", recipe, resume=True, progress=False)
    for phase in ("dataset", "vision", "sft", "stage1", "baseline"):
        assert resumed["seconds"][phase] == timings[phase]["seconds"]
    assert "stage2" in resumed["seconds"] and (tmp_path / "run" / "stage2" / "final").is_dir()


def test_the_command_line_sets_the_generator_and_its_storage():
    from descore.cli import build_parser
    from toyworld.descore_recipe import recipe_from_args

    parser = build_parser()
    default = recipe_from_args(parser.parse_args(["toy", "train-descore", "--out", "run"]))
    assert default.generator is None and default.generated_lossless
    args = [
        "toy",
        "train-descore",
        "--out",
        "run",
        "--generator",
        "gen_v1",
        "--lossy-generated",
        "--seed",
        "3",
    ]
    recipe = recipe_from_args(parser.parse_args(args))
    assert (recipe.generator, recipe.generated_lossless, recipe.seed) == ("gen_v1", False, 3)
    assert default.generated_prompts == 800
    more = recipe_from_args(
        parser.parse_args(["toy", "train-descore", "--out", "run", "--generated-prompts", "1400"])
    )
    assert more.generated_prompts == 1400
    assert default.generated_mirrors == ("hflip", "reverse", "hflip_reverse")
    plain = recipe_from_args(parser.parse_args(["toy", "train-descore", "--out", "run", "--no-mirrors"]))
    assert plain.generated_mirrors == ()
    with pytest.raises(ConfigError, match="generated-prompts"):
        recipe_from_args(
            parser.parse_args(["toy", "train-descore", "--out", "run", "--generated-prompts", "-1"])
        )


def test_stage_two_raises_the_rollout_reward_on_generator_samples(tmp_path):
    """Stage 2 from the shipped checkpoint on pairs of the toy generator's own samples (analyzer ground truth): over
    20 steps the mean rollout reward rises (the CoT ratings move towards what the analyzer measures; the track CoT
    starts high, so the rise is small and the first and last 5 steps are compared), the first importance ratio is
    exactly 1 and the BT accuracy on paired rollouts does not collapse."""
    import numpy as np

    from descore.training import read_metrics
    from descore.training.dual_rl import DualRLConfig, DualRLTrainer
    from toyworld.dataset import build_generated_dataset
    from toyworld.generator import TOY_GENERATOR_CALL, load_toy_generator, toy_prompts

    pipe = load_toy_generator()
    pipe.set_progress_bar_config(disable=True)
    data = build_generated_dataset(
        tmp_path / "data",
        pipe,
        toy_prompts(8, seed=31),
        0,
        call={**TOY_GENERATOR_CALL, "num_inference_steps": 8},
        fps=float(WORLD.fps),
        videos_per_prompt=3,
        test_fraction=0.0,
        progress=False,
    )
    config = DualRLConfig(
        model=str(SHIPPED_CHECKPOINT),
        train_file=str(data.pair_files["train"]),
        dimension=DIMENSION,
        output_dir=str(tmp_path / "run"),
        lora_r=16,
        lora_alpha=32.0,
        group_size=4,
        pairs_per_step=4,
        rollout_batch_size=16,
        micro_batch_pairs=2,
        mini_batches=2,
        max_new_tokens=200,
        length_thresholds=[100.0, 200.0, 300.0, 400.0],
        learning_rate=1e-3,
        max_steps=20,
        mixed_precision="no",
        save_every=0,
        progress=False,
        seed=0,
    )
    DualRLTrainer(config).train()
    steps = [m for m in read_metrics(tmp_path / "run") if "reward" in m]
    rewards = [m["reward"] for m in steps]
    assert len(rewards) == 20
    assert np.mean(rewards[-5:]) > np.mean(rewards[:5]) + 0.03, rewards  # seen: 0.746 -> 0.814
    assert steps[0]["ratio_first_update_max_dev"] == 0.0
    # a step with no decided pair (every pair tied) logs no BT accuracy
    assert np.mean([m["bt_accuracy"] for m in steps if m["bt_accuracy"] is not None]) > 0.35


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"generated_prompts": -1}, "generated_prompts"),
        ({"generated_prompts": 2.5}, "generated_prompts"),
        ({"export_stage": "sft"}, "export_stage must be stage1 or stage2"),
        ({"generated_mirrors": ("hflip", "vflip")}, "generated_mirrors must be distinct views"),
    ],
)
def test_the_recipe_refuses_bad_settings_before_making_anything(tmp_path, change, message):
    """The Python API checks what the command line checks, before any data or folder is made."""
    from dataclasses import replace

    with pytest.raises(ConfigError, match=message):
        train_toy_descore(tmp_path / "run", replace(ToyDeScoreRecipe(), **change), progress=False)
    assert not (tmp_path / "run").exists()
