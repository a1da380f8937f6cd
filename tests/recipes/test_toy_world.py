"""On the toy world, a recipe learns from the reward: on each of two training seeds it raises the reward, and it
raises the analyzer-measured true quality of fresh samples by more than a control run does.

A smaller version of ``bench/recipe_runs.py --sections toy --control also --train-seeds 0 1`` (whose reward,
evaluation, control and recipe settings it reuses): from the shipped toy generator, with the toy analyzer's overall
score as the reward, a few updates on 8 prompts, then the mean reward and the true quality (the analyzer's mean
overall score, 1-5) of 128 fresh samples of those prompts (seeds never used in training). Fine-tuning on its own
samples moves the toy generator's quality even when the reward teaches nothing, so the bar is the control: the same
run with the reward's values shuffled among the videos (``permuted``). The trained run's quality must beat the
control's by :data:`MARGIN` and its reward must rise by :data:`MARGIN`, on every seed of :data:`TRAIN_SEEDS`.
No recipe does so in these short runs (docs/recipes.md): GRPO did only with the broken first SDE step fixed in
b0f9934, whose rollouts were noise. Every case is a strict expected failure, so that a recipe that starts passing
says so and the docs get updated. With the toy DeScore as the reward the check also waits for a judge that ranks
the generator's samples of these prompts (docs/recipes.md). Slow (about 30 minutes on one CPU thread):
``pytest -m slow tests/recipes/test_toy_world.py``.
"""

import pytest
import torch

from toyworld.generator import load_toy_generator, toy_prompts

pytestmark = pytest.mark.slow

#: Updates per recipe, and the margin in analyzer overall-score points (1-5 scale) by which the trained run must beat
#: the control. On 256 samples: GRPO (lr 3e-3) gains +0.02 and +0.01 in 4 updates, about as much as its controls;
#: RWR beats its control by +0.17 and -0.09; DPO by -0.04 (seed 0).
UPDATES = {"grpo": 4, "dpo": 8, "rwr": 8}
MARGIN = 0.05
SEEDS_PER_PROMPT = 16
#: Training seeds: a recipe must beat its control on each (runs differ by more than the evaluation's noise).
TRAIN_SEEDS = (0, 1)


def trained(bench, recipe, reward, prompts, output_dir, seed):
    pipe = load_toy_generator()
    trainer = bench.make_trainer(
        recipe,
        pipe,
        bench.TOY_SPEC,
        reward,
        str(output_dir),
        prompts,
        num_updates=UPDATES[recipe],
        seed=seed,
        **bench.toy_settings(recipe),
    )
    assert len(trainer.train()) == UPDATES[recipe]
    return pipe


@pytest.mark.parametrize(
    "recipe",
    [
        pytest.param(
            "grpo",
            marks=pytest.mark.xfail(
                strict=True,
                raises=AssertionError,
                reason="GRPO does not beat its control by the margin in 4 updates",
            ),
        ),
        pytest.param(
            "dpo",
            marks=pytest.mark.xfail(
                strict=True, raises=AssertionError, reason="DPO does not beat its control on the toy world"
            ),
        ),
        pytest.param(
            "rwr",
            marks=pytest.mark.xfail(
                strict=True, raises=AssertionError, reason="RWR beats its control on seed 0 but not on seed 1"
            ),
        ),
    ],
)
def test_recipe_beats_its_control_on_true_quality(recipe, load_bench, tmp_path):
    torch.set_num_threads(1)
    bench = load_bench("recipe_runs")
    reward = bench.analyzer_reward()
    prompts = toy_prompts(8, seed=11)
    fresh = [p for p in prompts for _ in range(SEEDS_PER_PROMPT)]
    seeds = list(range(10**6, 10**6 + len(fresh)))
    before = bench.true_quality(load_toy_generator(), reward, fresh, seeds, bench.TOY_SPEC)
    for seed in TRAIN_SEEDS:
        runs = {
            name: bench.true_quality(
                trained(bench, recipe, run_reward, prompts, tmp_path / f"{name}-{seed}", seed),
                reward,
                fresh,
                seeds,
                bench.TOY_SPEC,
            )
            for name, run_reward in [("run", reward), ("control", bench.permuted(reward, seed))]
        }
        summary = {k: (v["reward"], v["true_quality"]) for k, v in {"before": before, **runs}.items()}
        assert runs["run"]["reward"] > before["reward"] + MARGIN, (seed, summary)
        assert runs["run"]["true_quality"] > runs["control"]["true_quality"] + MARGIN, (seed, summary)
