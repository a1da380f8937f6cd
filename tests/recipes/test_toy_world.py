"""On the toy world, GRPO, DPO and RWR raise both the reward and the analyzer-measured true quality of fresh samples.

A smaller version of ``bench/recipe_runs.py --sections toy`` (whose reward, evaluation and recipe settings it reuses):
from the toy generator (the shipped checkpoint, or the folder in ``DESCORE_TOY_GENERATOR``), with the toy
analyzer's overall score as the reward, 4 updates on 8 prompts; the mean reward and the true quality (the analyzer's
mean overall score, 1-5) of 24 fresh samples of those prompts (seeds never used in training) must both rise by
:data:`MARGIN`. Slow (about 2 minutes per recipe on one CPU thread): ``pytest -m slow tests/recipes/test_toy_world.py``.
"""

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from toyworld.generator import DEFAULT_CHECKPOINT, load_toy_generator, toy_prompts

GENERATOR = Path(os.environ.get("DESCORE_TOY_GENERATOR", DEFAULT_CHECKPOINT))
BENCH = Path(__file__).resolve().parents[2] / "bench" / "recipe_runs.py"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (GENERATOR / "model_index.json").is_file(),
        reason=f"no toy generator checkpoint at {GENERATOR} (descore toy train-generator, or DESCORE_TOY_GENERATOR)",
    ),
]

UPDATES = 4
#: The rise each recipe must show, in analyzer overall-score points (1-5 scale); seen: +0.09 to +0.20 after 4 updates.
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
    pipe = load_toy_generator(GENERATOR)
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
