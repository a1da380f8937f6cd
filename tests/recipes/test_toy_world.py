"""On the toy world, GRPO, DPO and RWR raise both the reward and the analyzer-measured true quality of fresh samples.

A smaller version of ``bench/recipe_runs.py --sections toy`` (whose reward, evaluation and recipe settings it reuses):
from the shipped toy generator, with the toy analyzer's overall score as the reward, 4 updates on 8 prompts; the mean
reward and the true quality (the analyzer's mean overall score, 1-5) of 24 fresh samples of those prompts (seeds
never used in training) must both rise by :data:`MARGIN`. The same check with the toy DeScore as the reward waits for
a toy DeScore that scores generator samples better than chance (docs/recipes.md). Slow (about a minute per recipe
on one CPU thread): ``pytest -m slow tests/recipes/test_toy_world.py``.
"""

import importlib.util
from pathlib import Path

import pytest
import torch

from toyworld.generator import load_toy_generator, toy_prompts

BENCH = Path(__file__).resolve().parents[2] / "bench" / "recipe_runs.py"

pytestmark = pytest.mark.slow

UPDATES = 4
#: The rise each recipe must show, in analyzer overall-score points (1-5 scale); seen with the shipped generator:
#: +0.07 (GRPO), +0.13 (DPO), +0.07 (RWR) after 4 updates.
MARGIN = 0.03


def _bench():
    spec = importlib.util.spec_from_file_location("bench_recipes", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("recipe", ["grpo", "dpo", "rwr"])
def test_recipe_raises_reward_and_true_quality(recipe, tmp_path):
    torch.set_num_threads(1)
    bench = _bench()
    reward = bench.analyzer_reward()
    prompts = toy_prompts(8, seed=11)
    fresh = [p for p in prompts for _ in range(3)]
    seeds = list(range(10**6, 10**6 + len(fresh)))
    pipe = load_toy_generator()
    before = bench.true_quality(pipe, reward, fresh, seeds, bench.TOY_SPEC)
    trainer = bench.make_trainer(
        recipe, pipe, bench.TOY_SPEC, reward, str(tmp_path), prompts, num_updates=UPDATES, prompts_per_update=4,
        **bench.toy_settings(recipe, 3e-3),
    )
    history = trainer.train()
    assert len(history) == UPDATES
    after = bench.true_quality(pipe, reward, fresh, seeds, bench.TOY_SPEC)
    assert after["reward"] > before["reward"] + MARGIN, (before, after)
    assert after["true_quality"] > before["true_quality"] + MARGIN, (before, after)
