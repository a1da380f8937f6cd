"""Reward-gradient guidance inside every tiny pipeline: it raises the reward, respects its knobs, refuses bad input."""

from __future__ import annotations

import logging
import math
from typing import ClassVar

import pytest
import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

from descore.errors import ConfigError, VideoError
from reward_guidance.best_of_n import best_of_n
from reward_guidance.families import decode_latents, family_adapter
from reward_guidance.guidance import RewardGuidanceCallback, guided_steps
from reward_guidance.protocol import CallableReward, descore_reward
from tests.reward_guidance.conftest import (
    FAMILIES,
    PROMPT,
    call_kwargs,
    generate,
    make_scorer,
    pipeline,
    smooth_pipeline,
)


class LookaheadProbe(PipelineCallback):
    """Runs after the guidance callback in the same step: the look-ahead reward of the updated latents."""

    tensor_inputs: ClassVar[list[str]] = ["latents"]

    def __init__(self, guidance: RewardGuidanceCallback):
        self.guidance, self.after = guidance, {}

    def callback_fn(self, pipe, step_index, timestep, tensors):
        if self.guidance.history and self.guidance.history[-1].step == step_index:
            self.after[step_index] = self.guidance.lookahead_rewards(tensors["latents"], step_index, timestep)
        return tensors


@pytest.fixture(scope="module")
def reward(scorer):
    return descore_reward(scorer, "think_free")


@pytest.mark.parametrize("family", FAMILIES)
def test_guidance_raises_the_reward_over_the_unguided_run(family, reward):
    pipe = smooth_pipeline(family)
    fps = family_adapter(pipe).default_fps()
    gains = []
    for seed in range(3):
        plain = generate(pipe, family, seed)
        # latents move by 0.02 RMS per guided step: small enough for every step's first-order gain to show
        with RewardGuidanceCallback(reward, pipe, prompt=PROMPT, weight=0.02, normalize=True) as guidance:
            probe = LookaheadProbe(guidance)
            guided = generate(
                pipe, family, seed, callback_on_step_end=MultiPipelineCallbacks([guidance, probe])
            )
        assert guided.shape == plain.shape == (1, 9, 3, 32, 32)
        assert [h.step for h in guidance.history] == [0, 1, 2]
        for step in guidance.history:  # every update raised the look-ahead reward it followed
            assert float(probe.after[step.step]) > step.rewards[0], (family, step)
        gains.append(float(reward(guided, PROMPT, fps=fps) - reward(plain, PROMPT, fps=fps)))
    assert sum(gains) / len(gains) > 0, gains
    assert not pipe.transformer._forward_pre_hooks  # closed with the block


def test_the_default_tiny_wan_vae_is_too_rough_for_finite_differences():
    """Why the guidance tests use an 8-channel Wan VAE: autograd is right, the 3-channel toy decoder is not smooth."""
    directions = {}
    for name, pipe in (("default", pipeline("wan2.1")), ("smooth", smooth_pipeline("wan2.1"))):
        latents = pipe(
            PROMPT, generator=torch.Generator().manual_seed(0), output_type="latent", **call_kwargs("wan2.1")
        ).frames
        weights = torch.randn(1, 9, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        x = latents.clone().requires_grad_(True)
        (decode_latents(pipe, x, grad=True) * weights).sum().backward()
        direction = x.grad / x.grad.norm()
        with torch.no_grad():
            finite = [
                float(
                    (
                        (
                            decode_latents(pipe, latents + e * direction)
                            - decode_latents(pipe, latents - e * direction)
                        )
                        * weights
                    ).sum()
                    / (2 * e)
                )
                for e in (1e-2, 1e-1)
            ]
        directions[name] = (finite, float(x.grad.norm()))
    finite, analytic = directions["smooth"]
    assert all(abs(f - analytic) < 0.02 * analytic for f in finite)
    finite, analytic = directions["default"]
    assert any(abs(f - analytic) > analytic for f in finite)


def test_weight_schedules_and_gradient_clipping(reward):
    pipe = pipeline("wan2.1")
    expected = {
        "linear": [1.0, 2 / 3, 1 / 3],
        "cosine": [1.0, 0.75, 0.25],
        "constant": [1.0, 1.0, 1.0],
    }
    for schedule, factors in expected.items():
        with RewardGuidanceCallback(reward, pipe, prompt=PROMPT, weight=2.0, schedule=schedule) as guidance:
            generate(pipe, "wan2.1", 0, callback_on_step_end=guidance)
        assert [h.weight for h in guidance.history] == pytest.approx([2.0 * f for f in factors])
        for step in guidance.history:
            assert step.update_norms[0] == pytest.approx(step.weight * step.grad_norms[0], rel=1e-4)
    with RewardGuidanceCallback(reward, pipe, prompt=PROMPT, weight=3.0, max_grad_norm=1e-4) as guidance:
        generate(pipe, "wan2.1", 0, callback_on_step_end=guidance)
    for step in guidance.history:
        assert step.update_norms[0] == pytest.approx(3.0 * min(step.grad_norms[0], 1e-4), rel=1e-3)
    with RewardGuidanceCallback(
        reward, pipe, prompt=PROMPT, weight=0.1, normalize=True, schedule=lambda progress: 1 + progress
    ) as guidance:
        generate(pipe, "wan2.1", 0, callback_on_step_end=guidance)
    size = math.sqrt(16 * 3 * 4 * 4)  # latent elements per video
    assert [h.update_norms[0] for h in guidance.history] == pytest.approx(
        [0.1 * size, 0.1 * size * 4 / 3, 0.1 * size * 5 / 3], rel=1e-4
    )


def test_window_guides_only_its_steps(reward, caplog):
    pipe = pipeline("ltx")
    with RewardGuidanceCallback(reward, pipe, prompt=PROMPT, window=(0.5, 1.0)) as guidance:
        generate(pipe, "ltx", 0, callback_on_step_end=guidance, num_inference_steps=4)
    assert [h.step for h in guidance.history] == [2, 3]
    assert guided_steps((0, 2), 3) == [0, 1] and guided_steps((0.0, 0.34), 3) == [0, 1]
    # (0, 1) as ints is step 0 alone, probably not what was meant: said once, at construction
    with caplog.at_level(logging.WARNING, logger="reward_guidance.guidance"):
        RewardGuidanceCallback(reward, pipe, prompt=PROMPT, window=(0.0, 1.0))
        assert not caplog.records
        RewardGuidanceCallback(reward, pipe, prompt=PROMPT, window=(0, 1))
    assert "only step 0" in caplog.text


def test_checkpointing_and_frame_subsets(reward):
    pipe = smooth_pipeline("hunyuanvideo")
    outputs = {}
    for name, options in {
        "plain": {},
        "checkpointed": {"checkpointing": True},
        "subset": {"frames": [1, 3, 5, 7]},
        "conditional": {"lookahead_cfg": False},
    }.items():
        with RewardGuidanceCallback(
            reward, pipe, prompt=PROMPT, weight=0.05, normalize=True, **options
        ) as guidance:
            outputs[name] = (
                generate(pipe, "hunyuanvideo", 0, callback_on_step_end=guidance),
                guidance.history,
            )
    assert torch.allclose(outputs["checkpointed"][0], outputs["plain"][0], atol=1e-5)
    assert not pipe.transformer.is_gradient_checkpointing and not pipe.vae.is_gradient_checkpointing
    assert outputs["subset"][0].shape == outputs["plain"][0].shape
    # DeScore reads frames 0, 4, 8 of the 24 fps clip, and 1, 7 of the 12 fps subset
    assert outputs["subset"][1][0].rewards != outputs["plain"][1][0].rewards
    # HunyuanVideo without true CFG makes one transformer call: the conditional look-ahead is the same
    assert torch.allclose(outputs["conditional"][0], outputs["plain"][0], atol=1e-6)
    wan = smooth_pipeline("wan2.1")
    with RewardGuidanceCallback(
        reward,
        wan,
        prompt=PROMPT,
        frames=5,
        checkpointing=True,
        lookahead_cfg=False,
        weight=0.05,
        normalize=True,
    ) as guidance:
        assert generate(wan, "wan2.1", 0, callback_on_step_end=guidance).shape == (1, 9, 3, 32, 32)
    assert len(guidance.history) == 3


def test_guidance_inside_best_of_n_batches(reward):
    pipe = pipeline("cogvideox")
    with RewardGuidanceCallback(reward, pipe, prompt=PROMPT, weight=0.05, normalize=True) as guidance:
        result = best_of_n(
            pipe,
            PROMPT,
            2,
            reward,
            seeds=[1, 2],
            batch_size=2,
            callback_on_step_end=guidance,
            **call_kwargs("cogvideox"),
        )
    assert result.video.shape == (9, 3, 32, 32)
    assert all(len(h.rewards) == 2 for h in guidance.history)


def test_bad_guidance_settings_name_the_fix(reward, scorer):
    pipe = pipeline("wan2.1")
    bad = [
        ({"window": (0.5, 0.2)}, "0 <= start < end <= 1"),
        ({"window": (0.5, 1.5)}, "0 <= start < end <= 1"),
        ({"window": (2, 2)}, "0 <= start < end"),
        ({"window": (0.1,)}, r"\(start, end\)"),
        ({"schedule": "exponential"}, "schedule must be one of"),
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
        ({"normalize": True, "max_grad_norm": 1.0}, "moot"),
        ({"prompt": ""}, "non-empty string"),
    ]
    for options, message in bad:
        with pytest.raises(ConfigError, match=message):
            RewardGuidanceCallback(reward, pipe, **{"prompt": PROMPT, **options})
    with pytest.raises(ConfigError, match="not differentiable"):
        RewardGuidanceCallback(descore_reward(scorer, "think"), pipe, prompt=PROMPT)
    with pytest.raises(ConfigError, match="not differentiable"):
        RewardGuidanceCallback(CallableReward(lambda v, p: v.mean(dim=(1, 2, 3, 4))), pipe, prompt=PROMPT)
    with pytest.raises(ConfigError, match="supported pipelines"):
        RewardGuidanceCallback(reward, torch.nn.Linear(2, 2), prompt=PROMPT)
    with pytest.raises(ConfigError, match="selects none of this run's 3 steps"):
        guided_steps((0.9, 0.95), 3)


def test_bad_runs_fail_with_clear_errors(reward):
    pipe = pipeline("wan2.1")
    cases = [
        ({"window": (2, 5)}, ConfigError, r"steps \[2, 5\) lie outside this run's 3 steps"),
        ({"prompt": [PROMPT, "a blue cube"]}, ConfigError, "the callback has 2 prompts"),
        (
            {"frames": 1},
            VideoError,
            r"frame subset \[0\] has 1 frame\(s\) at 16 fps .* Score at least 4 frames",
        ),
        (
            {"reward": descore_reward(make_scorer(fps=2.0), "think_free")},
            VideoError,
            "Generate at least 16 frames",
        ),
    ]
    for options, error, message in cases:
        options = {"reward": reward, "prompt": PROMPT, **options}
        with (
            RewardGuidanceCallback(options.pop("reward"), pipe, **options) as guidance,
            pytest.raises(error, match=message),
        ):
            generate(pipe, "wan2.1", 0, callback_on_step_end=guidance)
    # A late window still fails at the end of step 0 (its two CFG calls), not after the unguided steps.
    calls = []
    hook = pipe.transformer.register_forward_hook(lambda *args: calls.append(1))
    with (
        RewardGuidanceCallback(reward, pipe, prompt=PROMPT, window=(2, 3), frames=1) as guidance,
        pytest.raises(VideoError, match="Score at least 4 frames"),
    ):
        generate(pipe, "wan2.1", 0, callback_on_step_end=guidance)
    hook.remove()
    assert len(calls) == 2
    with (
        RewardGuidanceCallback(reward, pipe, prompt=PROMPT) as guidance,
        torch.inference_mode(),
        pytest.raises(ConfigError, match="inference_mode"),
    ):
        generate(pipe, "wan2.1", 0, callback_on_step_end=guidance)
