"""Every recipe runs an update on every tiny family; its LoRA reloads with load_lora_weights and reproduces the
trained pipeline's output; bad configs fail before any compute."""

import json

import pytest
import torch

from descore.errors import ConfigError
from recipes.config import RewardSpec
from recipes.dpo import DPOConfig, DPOTrainer
from recipes.draft import DRaFTConfig, DRaFTTrainer
from recipes.grpo import GRPOConfig, GRPOTrainer
from recipes.lora import LoraSpec, load_lora
from recipes.rollout import seeded_generators
from recipes.rwr import RWRConfig, RWRTrainer
from reward_guidance.protocol import CallableReward, CascadeReward, FrameNeeds
from tests.recipes.conftest import FAMILIES, PROMPTS, tiny_spec
from toyworld.tiny_models.video_pipelines import PIPELINE_CALL_DEFAULTS

RECIPES = {
    "grpo": (GRPOConfig, GRPOTrainer, {"beta": 0.01, "clip_range": 1e-3}),
    "rwr": (RWRConfig, RWRTrainer, {"beta": 0.05}),
    "dpo": (DPOConfig, DPOTrainer, {"beta": 100.0}),
    "draft": (DRaFTConfig, DRaFTTrainer, {"group_size": 2, "last_k": 1}),
}


def redness(videos, prompts):
    """A differentiable toy reward: how much redder than green and blue the video is."""
    return (videos[:, :, 0] - 0.5 * (videos[:, :, 1] + videos[:, :, 2])).mean(dim=(1, 2, 3))


def reward():
    return CallableReward(redness, differentiable=True, name="redness")


def make_config(recipe, family, tmp_path, **changes):
    config_cls, _, extra = RECIPES[recipe]
    values = {
        "output_dir": str(tmp_path / recipe),
        "prompts": PROMPTS,
        "sampling": tiny_spec(family),
        "lora": LoraSpec(rank=2, alpha=2),
        "num_updates": 1,
        "prompts_per_update": 1,
        "group_size": 2,
        "sample_batch_size": 2,
        "learning_rate": 1e-2,
        "progress": False,
        **extra,
        **changes,
    }
    return config_cls(**values)


def sample(pipe, family):
    return pipe(
        PROMPTS[:1], **PIPELINE_CALL_DEFAULTS[family], generator=seeded_generators([9]), output_type="latent"
    ).frames


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_one_update_on_every_family_and_lora_reload(recipe, family, make_pipeline, tmp_path):
    pipe = make_pipeline(family)
    before = sample(pipe, family)
    trainer = RECIPES[recipe][1](make_config(recipe, family, tmp_path), pipe=pipe, reward=reward())
    history = trainer.train()
    assert len(history) == 1 and all(torch.isfinite(torch.tensor(v)) for v in history[0].values())
    metrics = history[0]
    assert {"reward/mean", "reward/std", "train/grad_norm", "train/lr"} <= set(metrics)
    assert metrics["train/grad_norm"] > 0
    if recipe == "grpo":
        assert metrics["train/first_step_ratio_deviation"] == 0.0  # ratio exactly 1 before the update
        assert {"train/kl", "train/clip_frac", "train/ratio_mean", "train/ratio_max"} <= set(metrics)
    if recipe == "dpo":
        assert "train/implicit_accuracy" in metrics
    trained = sample(pipe, family)
    assert not torch.equal(trained, before)
    fresh = make_pipeline(family)
    lora_dir = tmp_path / recipe / "lora"
    if family == "wan2.2":
        load_lora(fresh, lora_dir)
    else:
        fresh.load_lora_weights(lora_dir)
    assert torch.equal(sample(fresh, family), trained)
    logged = [json.loads(line) for line in (tmp_path / recipe / "metrics.jsonl").read_text().splitlines()]
    assert logged[0]["reward/mean"] == metrics["reward/mean"]


def test_bad_inputs_fail_before_compute(make_pipeline, tmp_path):
    with pytest.raises(ConfigError, match="group_size"):
        make_config("grpo", "wan2.1", tmp_path, group_size=1)
    with pytest.raises(ConfigError, match="rank"):
        make_config("grpo", "wan2.1", tmp_path, lora=LoraSpec(rank=0))
    needs_more = CallableReward(redness, frames=FrameNeeds(min_frames=16), name="long")
    pipe = make_pipeline("wan2.1")
    calls = []
    pipe.transformer.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(ConfigError, match="frame"):
        GRPOTrainer(make_config("grpo", "wan2.1", tmp_path), pipe=pipe, reward=needs_more)
    plain = CallableReward(redness, name="not-differentiable")
    with pytest.raises(ConfigError, match="not differentiable"):
        DRaFTTrainer(make_config("draft", "wan2.1", tmp_path), pipe=pipe, reward=plain)
    # A cascade rewards only its shortlist (NaN elsewhere): refused as a spec and as an instance.
    with pytest.raises(ConfigError, match="reward.mode: 'cascade' scores only its top_k"):
        RewardSpec(kind="descore", path="unused", mode="cascade")
    with pytest.raises(ConfigError, match="reward.mode: expected 'think_free' or 'think', got 'thinking'"):
        RewardSpec(kind="descore", path="unused", mode="thinking")
    with pytest.raises(ConfigError, match="a cascade scores only its shortlist"):
        RWRTrainer(make_config("rwr", "wan2.1", tmp_path), pipe=pipe, reward=CascadeReward(plain, plain, 1))
    assert not calls  # nothing ran
    with pytest.raises(ConfigError, match="num_frames"):
        GRPOTrainer(
            make_config("grpo", "wan2.1", tmp_path, sampling=tiny_spec("wan2.1", num_frames=10)),
            pipe=pipe,
            reward=reward(),
        )
    with pytest.raises(ConfigError, match="pair_file"):
        make_config("dpo", "wan2.1", tmp_path, pair_source="offline")


@pytest.mark.parametrize("fps", [0, -8.0, float("nan"), True, "8"])
def test_a_bad_sampling_fps_is_refused(fps):
    with pytest.raises(ConfigError, match="sampling.fps"):
        tiny_spec("wan2.1", fps=fps)


def test_the_sampling_fps_is_what_the_reward_is_told(make_pipeline, tmp_path):
    # The tiny Wan makes 9 frames. Told the family's 16 fps (0.56 s), a reward that samples at 8 fps gets 4 frames,
    # under the 8 it needs; told sampling.fps = 8 (1.1 s), it gets all 9.
    needs = FrameNeeds(fps=8.0, min_frames=8)
    long = CallableReward(redness, frames=needs, name="long")
    with pytest.raises(ConfigError, match="at 16 fps"):
        GRPOTrainer(make_config("grpo", "wan2.1", tmp_path), pipe=make_pipeline("wan2.1"), reward=long)
    told = []

    def spy(videos, prompts, fps):
        told.append((videos.shape[1], fps))
        return redness(videos, prompts)

    config = make_config("grpo", "wan2.1", tmp_path, sampling=tiny_spec("wan2.1", fps=8.0))
    trainer = GRPOTrainer(config, pipe=make_pipeline("wan2.1"), reward=CallableReward(spy, frames=needs))
    assert trainer.fps == 8.0
    trainer.run_update(0)
    assert told and set(told) == {(9, 8.0)}
