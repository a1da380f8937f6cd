"""On the toy world, GRPO, DPO and RWR raise both the reward and the analyzer-measured true quality of fresh samples.

Starts from the shipped toy generator (:func:`toyworld.generator.load_toy_generator`); the reward is the toy
analyzer's overall score (a toy DeScore checkpoint can replace it in ``bench/recipes.py --descore``). True quality is
measured by :func:`toyworld.generator.evaluate_generator` on held-out prompts with fixed seeds, before and after a
short run. Slow (minutes on a CPU): ``pytest -m slow tests/recipes/test_toy_world.py``.
"""

import pytest
import torch

from recipes.dpo import DPOConfig, DPOTrainer
from recipes.families import SamplingSpec
from recipes.grpo import GRPOConfig, GRPOTrainer
from recipes.lora import LoraSpec
from recipes.rwr import RWRConfig, RWRTrainer
from reward_guidance.protocol import CallableReward
from toyworld.analyzer import analyze
from toyworld.generator import (
    DEFAULT_CHECKPOINT,
    MAX_SEQUENCE_LENGTH,
    evaluate_generator,
    load_toy_generator,
    toy_prompts,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (DEFAULT_CHECKPOINT / "model_index.json").is_file(),
        reason="the toy generator checkpoint is not built (descore toy train-generator)",
    ),
]

SPEC = SamplingSpec(
    height=64, width=64, num_frames=9, num_inference_steps=8, guidance_scale=4.0, max_sequence_length=MAX_SEQUENCE_LENGTH
)
UPDATES = 6
#: The improvement each recipe must show, in analyzer overall-score points (1-5 scale).
MARGIN = 0.05
RECIPES = {
    "grpo": (GRPOConfig, GRPOTrainer, {"beta": 0.004, "clip_range": 1e-3, "optimizer_steps_per_update": 2}),
    "dpo": (DPOConfig, DPOTrainer, {"beta": 100.0, "train_timesteps": 2}),
    "rwr": (RWRConfig, RWRTrainer, {"beta": 0.25, "train_timesteps": 2}),
}


def analyzer_reward():
    def overall(videos, prompts):
        return torch.tensor([analyze(v.float(), p).overall for v, p in zip(videos, prompts)])

    return CallableReward(overall, name="analyzer")


def quality(pipe, prompts, seeds):
    call = {"num_frames": SPEC.num_frames - 1, "num_inference_steps": SPEC.num_inference_steps}
    return evaluate_generator(pipe, prompts, seeds, **call).agreement["overall"]


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_recipe_raises_reward_and_true_quality(recipe, tmp_path):
    torch.set_num_threads(1)
    held_out = toy_prompts(16, seed=12)
    seeds = list(range(1000, 1016))
    pipe = load_toy_generator()
    before = quality(pipe, held_out, seeds)
    config_cls, trainer_cls, extra = RECIPES[recipe]
    config = config_cls(
        output_dir=str(tmp_path), prompts=toy_prompts(64, seed=11), sampling=SPEC, lora=LoraSpec(rank=8, alpha=8),
        num_updates=UPDATES, prompts_per_update=4, group_size=4, sample_batch_size=8, learning_rate=3e-4,
        checkpoint_every=0, progress=False, **extra,
    )
    history = trainer_cls(config, pipe=pipe, reward=analyzer_reward()).train()
    after = quality(pipe, held_out, seeds)
    early = sum(m["reward/mean"] for m in history[:2]) / 2
    late = sum(m["reward/mean"] for m in history[-2:]) / 2
    assert late > early + MARGIN, [m["reward/mean"] for m in history]
    assert after > before + MARGIN, (before, after)
