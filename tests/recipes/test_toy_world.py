"""On the toy world, GRPO and RWR raise both the reward and the analyzer-measured true quality of fresh samples.

A smaller version of ``bench/recipe_runs.py --sections toy`` (whose reward, evaluation and recipe settings it reuses):
from the shipped toy generator, with the toy analyzer's overall score as the reward, a few updates on 8 prompts; the
mean reward and the true quality (the analyzer's mean overall score, 1-5) of 64 fresh samples of those prompts (seeds
never used in training) must both rise by :data:`MARGIN`. DPO does not raise the true quality of the current toy
generator in a short run (docs/recipes.md), so its case is a strict expected failure: if DPO starts passing, the test
says so and the docs need updating. The same check with the toy DeScore as
the reward waits for a toy DeScore that scores generator samples better than chance (docs/recipes.md). Slow (one to
three minutes per recipe on one CPU thread): ``pytest -m slow tests/recipes/test_toy_world.py``.
"""

import pytest
import torch

from toyworld.generator import load_toy_generator, toy_prompts

pytestmark = pytest.mark.slow

#: Updates per recipe. The rise each recipe must show, in analyzer overall-score points (1-5 scale); seen with the
#: shipped generator on these 64 samples: +0.40 (GRPO, 4 updates), +0.21 (RWR, 8 updates), -0.04 to 0.00 (DPO).
UPDATES = {"grpo": 4, "dpo": 8, "rwr": 8}
MARGIN = 0.05
SEEDS_PER_PROMPT = 8


@pytest.mark.parametrize(
    "recipe",
    [
        "grpo",
        pytest.param(
            "dpo",
            marks=pytest.mark.xfail(
                strict=True, reason="DPO does not lift the toy generator v2 in 8 updates"
            ),
        ),
        "rwr",
    ],
)
def test_recipe_raises_reward_and_true_quality(recipe, load_bench, tmp_path):
    torch.set_num_threads(1)
    bench = load_bench("recipe_runs")
    reward = bench.analyzer_reward()
    prompts = toy_prompts(8, seed=11)
    fresh = [p for p in prompts for _ in range(SEEDS_PER_PROMPT)]
    seeds = list(range(10**6, 10**6 + len(fresh)))
    pipe = load_toy_generator()
    before = bench.true_quality(pipe, reward, fresh, seeds, bench.TOY_SPEC)
    trainer = bench.make_trainer(
        recipe,
        pipe,
        bench.TOY_SPEC,
        reward,
        str(tmp_path),
        prompts,
        num_updates=UPDATES[recipe],
        prompts_per_update=4,
        **bench.toy_settings(recipe),
    )
    history = trainer.train()
    assert len(history) == UPDATES[recipe]
    after = bench.true_quality(pipe, reward, fresh, seeds, bench.TOY_SPEC)
    assert after["reward"] > before["reward"] + MARGIN, (before, after)
    assert after["true_quality"] > before["true_quality"] + MARGIN, (before, after)
