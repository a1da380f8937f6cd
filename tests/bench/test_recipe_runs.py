"""The printed metrics of bench/recipe_runs.py."""

from __future__ import annotations


def test_gradient_norms_print_in_scientific_notation(load_bench):
    bench = load_bench("recipe_runs")
    # Small gradient norms (Flow-GRPO's on the toy go down to 1e-4): three decimals would print 0.000.
    assert bench._metric("grad_norm", 1.234e-7) == "grad_norm 1.23e-07"
    assert bench._metric("update", 4) == "update 4"
    assert bench._metric("true_quality", 1.9334) == "true_quality 1.933"


def test_the_control_reward_shuffles_the_values_among_the_videos(load_bench):
    import torch

    from reward_guidance.protocol import CallableReward

    bench = load_bench("recipe_runs")
    videos = (torch.arange(8.0) / 8).view(8, 1, 1, 1, 1).expand(8, 2, 3, 4, 4)
    exact = CallableReward(lambda v, p: v.mean(dim=(1, 2, 3, 4)), name="mean")
    control = bench.permuted(exact, seed=0)
    values = control(videos, ["p"] * 8)
    assert sorted((values * 8).round().tolist()) == list(range(8))  # the same values ...
    assert (values * 8).round().tolist() != list(range(8))  # ... no longer attached to their videos
    assert bench.permuted(exact, seed=0)(videos, ["p"] * 8).tolist() == values.tolist()  # seeded


def test_overrides_are_per_recipe_and_typed_by_the_config(load_bench, tmp_path):
    import pytest

    from descore.errors import ConfigError
    from toyworld.generator import load_toy_generator

    bench = load_bench("recipe_runs")
    overrides = bench.recipe_overrides(["dpo.learning_rate=1e-2", "dpo.pairing=all", "rwr.beta=0.5"])
    assert overrides == {"dpo": {"learning_rate": "1e-2", "pairing": "all"}, "rwr": {"beta": 0.5}}
    trainer = bench.make_trainer(
        "dpo",
        load_toy_generator(),
        bench.TOY_SPEC,
        bench.analyzer_reward(),
        str(tmp_path),
        ["a red circle"],
        **overrides["dpo"],
    )
    assert trainer.config.learning_rate == 0.01 and trainer.config.pairing == "all"
    with pytest.raises(SystemExit, match="RECIPE.KEY=VALUE"):
        bench.recipe_overrides(["sft_weight=1"])
    with pytest.raises(ConfigError, match="unknown key"):
        bench.make_trainer(
            "dpo",
            load_toy_generator(),
            bench.TOY_SPEC,
            bench.analyzer_reward(),
            str(tmp_path),
            ["a"],
            colour=1,
        )


def test_paired_change_is_the_mean_per_sample_difference(load_bench):
    bench = load_bench("recipe_runs")
    before = {"qualities": [1.0, 2.0, 3.0, 1.0]}
    after = {"qualities": [2.0, 3.0, 4.0, 2.0]}
    assert bench.paired_change(before, after, "qualities") == (1.0, 1.0, 1.0)


def test_the_noisy_analyzer_adds_seeded_gaussian_noise(load_bench):
    import numpy as np
    import torch

    from toyworld.prompts import write_prompt
    from toyworld.render import render
    from toyworld.scene import sample_scene

    bench = load_bench("recipe_runs")
    scenes = [sample_scene(np.random.default_rng(i)) for i in range(3)]
    videos = torch.from_numpy(render(scenes)).float()
    prompts = [write_prompt(s.spec, np.random.default_rng(0)) for s in scenes]
    exact = bench.analyzer_reward()(videos, prompts)
    noisy = bench.analyzer_reward(noise=0.5, seed=3)(videos, prompts)
    expected = exact + 0.5 * torch.randn(3, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(noisy, expected)
    assert bench.analyzer_reward(noise=0.5, seed=3).name != bench.analyzer_reward().name


def test_varied_prompts_keeps_the_prompts_whose_samples_differ_most(load_bench, monkeypatch):
    from toyworld.generator import toy_prompts

    bench = load_bench("recipe_runs")
    # Per pool prompt, two samples' true quality: prompt 2 varies most, then prompt 0; prompt 1 not at all.
    qualities = [1.5, 2.5, 1.3, 1.3, 1.0, 3.0]
    seen = {}

    def true_quality(pipe, reward, prompts, seeds, spec):
        seen.update(prompts=prompts, seeds=seeds, reward=reward)
        return {"qualities": qualities}

    monkeypatch.setattr(bench, "true_quality", true_quality)
    pool = toy_prompts(3, seed=11)
    assert bench.varied_prompts(None, n=2, pool=3, samples=2) == [pool[2], pool[0]]
    assert seen["prompts"] == [pool[0], pool[0], pool[1], pool[1], pool[2], pool[2]]
    assert seen["reward"] is None  # only the analyzer's score is needed: no second scoring
    # Seeds of their own: neither the evaluations' (from 10**6, 256 samples and more) nor the trainers'.
    assert seen["seeds"] == list(range(bench.SELECTION_SEED_BASE, bench.SELECTION_SEED_BASE + 6))
    assert bench.SELECTION_SEED_BASE >= 2 * 10**6
