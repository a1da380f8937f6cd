"""The reward protocol: frame needs, validation, callables, the DeScore adapter in its three modes."""

from __future__ import annotations

import pytest
import torch

from descore.errors import ConfigError, VideoError
from reward_guidance.protocol import (
    CallableReward,
    CascadeReward,
    DeScoreReward,
    FrameNeeds,
    as_reward,
    descore_reward,
)
from tests.reward_guidance.conftest import PROMPT, make_scorer


def clips(batch: int = 4, frames: int = 9, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, frames, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def brightness(videos: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    return videos.mean(dim=(1, 2, 3, 4))


def test_frame_needs_follow_the_sampling_rule_and_name_the_fix():
    needs = FrameNeeds(min_frames=2, max_frames=16, fps=2.0)
    picked = needs.indices(81, 16.0)  # 81 frames / 16 fps * 2 fps = 10 frames, spread from first to last
    assert len(picked) == 10 and picked[0] == 0 and picked[-1] == 80
    assert len(needs.indices(9, None)) == 9  # unknown rate: every frame, thinned to max_frames
    needs.check(81, 16.0)
    with pytest.raises(
        VideoError, match=r"9 frame\(s\) at 16 fps .* needs at least 2\. Generate at least 16 frames"
    ):
        needs.check(9, 16.0, "the clip")
    with pytest.raises(VideoError, match="needs at least 3"):
        FrameNeeds(min_frames=3).check(2, None)
    with pytest.raises(ConfigError, match="max_frames"):
        FrameNeeds(min_frames=4, max_frames=2)
    for fps in (0, -8.0, float("nan"), float("inf"), True, "8"):
        with pytest.raises(ConfigError, match=r"FrameNeeds\.fps must be a positive number"):
            FrameNeeds(fps=fps)


def test_callable_reward_validates_inputs_and_outputs():
    reward = CallableReward(brightness)
    videos = clips()
    assert torch.allclose(reward(videos, PROMPT), videos.mean(dim=(1, 2, 3, 4)))
    assert not reward.differentiable and reward.name == "brightness"
    with pytest.raises(VideoError, match=r"values must lie in \[0, 1\]"):
        reward(videos * 2 - 1, PROMPT)
    with pytest.raises(VideoError, match=r"shape \(B, F, 3, H, W\)"):
        reward(videos[0], PROMPT)
    with pytest.raises(ConfigError, match="got 4 videos but 2 prompts"):
        reward(videos, [PROMPT, PROMPT])
    with pytest.raises(ValueError, match="one number per video"):
        CallableReward(lambda v, p: v.mean())(videos, PROMPT)
    with pytest.raises(ValueError, match="non-finite"):
        CallableReward(lambda v, p: torch.full((len(p),), float("nan")))(videos, PROMPT)
    with pytest.raises(ConfigError, match="callable"):
        as_reward(3)


def test_callable_reward_gets_fps_when_it_asks_and_micro_batches():
    seen = []

    def rate_aware(videos, prompts, fps=None):
        seen.append((videos.shape[0], fps))
        return [fps] * len(prompts)

    reward = CallableReward(rate_aware, batch_size=3)
    out = reward(clips(batch=5), PROMPT, fps=16.0)
    assert out.tolist() == [16.0] * 5 and out.dtype == torch.float32
    assert seen == [(3, 16.0), (2, 16.0)]


def test_callable_reward_keeps_the_graph_when_differentiable():
    reward = CallableReward(brightness, differentiable=True)
    videos = clips().requires_grad_(True)
    reward(videos, PROMPT).sum().backward()
    assert torch.allclose(videos.grad, torch.full_like(videos, 1 / videos[0].numel()))


def test_descore_reward_think_free_is_differentiable_and_freezes_the_scorer(scorer):
    reward = descore_reward(scorer, "think_free", batch_size=2)
    assert isinstance(reward, DeScoreReward) and reward.differentiable
    assert reward.frames == FrameNeeds(min_frames=2, max_frames=16, fps=8.0)
    videos = clips().requires_grad_(True)
    rewards = reward(videos, PROMPT, fps=16.0)
    expected = scorer.score(list(videos.detach()), PROMPT, think=False, video_fps=16.0).rewards
    assert torch.allclose(rewards.detach(), expected, atol=1e-5)
    rewards.sum().backward()
    # DeScore at 8 fps reads frames 0, 3, 5, 8 of a 9-frame 16 fps clip: only those get gradient
    touched = (videos.grad.abs().sum(dim=(0, 2, 3, 4)) > 0).nonzero().flatten().tolist()
    assert touched == reward.frames.indices(9, 16.0) == [0, 3, 5, 8]
    assert all(p.requires_grad for p in scorer.model.parameters())  # restored after the call
    assert all(p.grad is None for p in scorer.model.parameters())


def test_descore_reward_think_returns_chains_of_thought(scorer):
    reward = descore_reward(scorer, "think")
    assert not reward.differentiable
    out = reward.evaluate(clips(batch=2), PROMPT, fps=16.0)
    direct = scorer.score(list(clips(batch=2)), PROMPT, think=True, video_fps=16.0)
    assert torch.allclose(out.rewards, direct.rewards, atol=1e-5)
    assert out.cots == direct.cots and all(isinstance(c, str) for c in out.cots)


def test_cascade_thinks_only_for_the_top_k(scorer):
    cascade = descore_reward(scorer, "cascade", top_k=2)
    assert isinstance(cascade, CascadeReward) and not cascade.differentiable
    videos = clips(batch=5, seed=3)
    out = cascade.evaluate(videos, PROMPT, fps=16.0)
    free = scorer.score(list(videos), PROMPT, think=False, video_fps=16.0).rewards
    top = free.argsort(descending=True)[:2].tolist()
    assert torch.allclose(out.first_stage_rewards, free, atol=1e-5)
    assert sorted(torch.isfinite(out.rewards).nonzero().flatten().tolist()) == sorted(top)
    thought = scorer.score(list(videos[top]), PROMPT, think=True, video_fps=16.0)
    assert torch.allclose(out.rewards[top], thought.rewards, atol=1e-5)
    assert [out.cots[k] for k in top] == thought.cots
    assert all(out.cots[k] is None for k in range(5) if k not in top)


def test_descore_reward_refuses_clips_its_sampling_cannot_read():
    reward = descore_reward(make_scorer(fps=2.0), "think_free")
    with pytest.raises(VideoError, match=r"9 frame\(s\) at 16 fps .* Generate at least 16 frames"):
        reward(clips(), PROMPT, fps=16.0)


def test_bad_reward_arguments(scorer):
    with pytest.raises(ConfigError, match="'think' or 'think_free'"):
        DeScoreReward(scorer, "cascade")
    with pytest.raises(ConfigError, match="top_k"):
        CascadeReward(CallableReward(brightness), CallableReward(brightness), top_k=0)
    with pytest.raises(ConfigError, match="batch_size"):
        CallableReward(brightness, batch_size=0)
    with pytest.raises(ConfigError, match="sampling overrides"):
        DeScoreReward(scorer, sampling={"frames_per_second": 4})


def test_to_moves_every_descore_inside_a_reward_and_leaves_callables_alone():
    first, second = make_scorer(seed=1), make_scorer(seed=2)
    cascade = descore_reward(first, "cascade")
    assert isinstance(cascade, CascadeReward)
    cascade.second.scorer = second
    assert cascade.to("meta") is cascade
    assert first.model.device.type == "meta" and second.model.device.type == "meta"
    plain = CallableReward(brightness)
    assert plain.to("meta") is plain
    learned = CallableReward(torch.nn.Linear(3, 1))
    learned.to("meta")
    assert learned.fn.weight.device.type == "meta"
