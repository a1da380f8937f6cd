"""On the toy world, GRPO and RWR learn from the reward: they raise it, and they raise the analyzer-measured true
quality of fresh samples by more than a control run does.

A smaller version of ``bench/recipe_runs.py --sections toy --control also`` (whose reward, evaluation, control and
recipe settings it reuses): from the shipped toy generator, with the toy analyzer's overall score as the reward, a few
updates on 8 prompts, then the mean reward and the true quality (the analyzer's mean overall score, 1-5) of 128 fresh
samples of those prompts (seeds never used in training). Fine-tuning on its own samples moves the toy generator's
quality even when the reward teaches nothing, so the bar is the control: the same run with the reward's values
shuffled among the videos (``permuted``). The trained run's quality must beat the control's by :data:`MARGIN`, and
its reward must rise by :data:`MARGIN`. DPO does not beat its control (docs/recipes.md), so its case is a strict
expected failure: if DPO starts passing, the test says so and the docs need updating. With the toy DeScore as the
reward the check waits for a judge that ranks the generator's samples of these prompts (docs/recipes.md). Slow
(about two to five minutes per recipe on one CPU thread): ``pytest -m slow tests/recipes/test_toy_world.py``.
"""

import pytest
import torch

from toyworld.generator import load_toy_generator, toy_prompts

pytestmark = pytest.mark.slow

#: Updates per recipe, and the margin in analyzer overall-score points (1-5 scale) by which the trained run must beat
#: the control. On 256 samples: GRPO and RWR beat their controls by about 0.2; DPO falls short of its own (-0.04).
UPDATES = {"grpo": 4, "dpo": 8, "rwr": 8}
MARGIN = 0.05
SEEDS_PER_PROMPT = 16


def trained(bench, recipe, reward, prompts, output_dir):
    pipe = load_toy_generator()
    trainer = bench.make_trainer(
        recipe,
        pipe,
        bench.TOY_SPEC,
        reward,
        str(output_dir),
        prompts,
        num_updates=UPDATES[recipe],
        prompts_per_update=4,
        **bench.toy_settings(recipe),
    )
    assert len(trainer.train()) == UPDATES[recipe]
    return pipe


@pytest.mark.parametrize(
    "recipe",
    [
        "grpo",
        pytest.param(
            "dpo",
            marks=pytest.mark.xfail(strict=True, reason="DPO does not beat its control on the toy world"),
        ),
        "rwr",
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
    learned = bench.true_quality(
        trained(bench, recipe, reward, prompts, tmp_path / "run"), reward, fresh, seeds, bench.TOY_SPEC
    )
    control = bench.true_quality(
        trained(bench, recipe, bench.permuted(reward, 0), prompts, tmp_path / "control"),
        reward,
        fresh,
        seeds,
        bench.TOY_SPEC,
    )
    summary = {
        k: (v["reward"], v["true_quality"])
        for k, v in [("before", before), ("run", learned), ("control", control)]
    }
    assert learned["reward"] > before["reward"] + MARGIN, summary
    assert learned["true_quality"] > control["true_quality"] + MARGIN, summary
