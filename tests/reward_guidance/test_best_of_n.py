"""Best-of-N on every tiny pipeline: the winner is the argmax, its seed regenerates it, cascades think for the top k."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from descore.errors import ConfigError, VideoError
from reward_guidance.best_of_n import best_of_n, candidate_seeds
from reward_guidance.protocol import CallableReward, descore_reward
from tests.reward_guidance.conftest import FAMILIES, PROMPT, call_kwargs, generate, make_scorer, pipeline


@pytest.mark.parametrize("family", FAMILIES)
def test_best_of_n_keeps_the_argmax_and_its_seed_regenerates_it(family, scorer):
    pipe = pipeline(family)
    reward = descore_reward(scorer, "think_free")
    result = best_of_n(pipe, PROMPT, 3, reward, seeds=[11, 12, 13], batch_size=2, **call_kwargs(family))
    assert result.video.shape == (9, 3, 32, 32)  # the wrapped pipeline's output shape for one video
    assert result.rewards.shape == (3,) and result.seeds == [11, 12, 13]
    assert result.index == int(result.rewards.argmax()) and result.seed == 10 + 1 + result.index
    assert result.reward == pytest.approx(float(result.rewards.max()))
    again = generate(pipe, family, seed=result.seed)[0]
    assert torch.allclose(again, result.video, atol=1e-4)
    rescored = reward(again[None], PROMPT, fps=result.fps)
    assert float(rescored) == pytest.approx(result.reward, abs=1e-4)


def test_batched_and_sequential_generation_agree(scorer):
    pipe = pipeline("wan2.1")
    reward = descore_reward(scorer, "think_free")
    kwargs = call_kwargs("wan2.1")
    batched = best_of_n(pipe, PROMPT, 4, reward, seeds=5, batch_size=4, keep_videos=True, **kwargs)
    sequential = best_of_n(pipe, PROMPT, 4, reward, seeds=5, batch_size=1, keep_videos=True, **kwargs)
    assert batched.seeds == sequential.seeds == [5, 6, 7, 8]
    assert torch.allclose(batched.rewards, sequential.rewards, atol=1e-4)
    assert torch.allclose(batched.videos, sequential.videos, atol=1e-4)
    assert batched.index == sequential.index
    assert torch.equal(batched.videos[batched.index], batched.video)
    # an explicit None for an argument best_of_n fills in is the default, not a conflict
    defaults = best_of_n(
        pipe, PROMPT, 4, reward, seeds=5, batch_size=4, latents=None, prompt_embeds=None, **kwargs
    )
    assert torch.equal(defaults.rewards, batched.rewards)


def test_cascade_thinks_only_for_the_shortlist_and_picks_from_it(scorer):
    pipe = pipeline("wan2.1")
    kwargs = call_kwargs("wan2.1")
    cascade = best_of_n(
        pipe, PROMPT, 4, descore_reward(scorer, "cascade", top_k=2), seeds=20, batch_size=2, **kwargs
    )
    free = best_of_n(pipe, PROMPT, 4, descore_reward(scorer, "think_free"), seeds=20, batch_size=2, **kwargs)
    think = best_of_n(pipe, PROMPT, 4, descore_reward(scorer, "think"), seeds=20, batch_size=2, **kwargs)
    assert torch.allclose(cascade.first_stage_rewards, free.rewards, atol=1e-5)
    assert cascade.shortlist == free.rewards.argsort(descending=True)[:2].tolist()
    outside = [k for k in range(4) if k not in cascade.shortlist]
    assert torch.isnan(cascade.rewards[outside]).all()
    assert torch.allclose(cascade.rewards[cascade.shortlist], think.rewards[cascade.shortlist], atol=1e-4)
    assert cascade.index == max(cascade.shortlist, key=lambda k: float(think.rewards[k]))
    assert all(isinstance(cascade.cots[k], str) for k in cascade.shortlist)
    assert all(cascade.cots[k] is None for k in outside)
    assert set(cascade.seconds) == {"generation", "first_stage", "second_stage"}


def test_output_types_follow_the_pipeline():
    pipe = pipeline("wan2.1")
    reward = CallableReward(lambda v, p: v.mean(dim=(1, 2, 3, 4)))
    as_pt = best_of_n(pipe, PROMPT, 2, reward, seeds=[1, 2], **call_kwargs("wan2.1"))
    as_np = best_of_n(pipe, PROMPT, 2, reward, seeds=[1, 2], output_type="np", **call_kwargs("wan2.1"))
    as_pil = best_of_n(pipe, PROMPT, 2, reward, seeds=[1, 2], output_type="pil", **call_kwargs("wan2.1"))
    assert as_np.video.shape == (9, 32, 32, 3)
    assert np.allclose(as_np.video, as_pt.video.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    assert len(as_pil.video) == 9 and as_pil.video[0].size == (32, 32)


def test_seeds_are_recorded_when_drawn():
    torch.manual_seed(0)
    seeds = candidate_seeds(None, 5)
    torch.manual_seed(0)
    assert candidate_seeds(None, 5) == seeds and len(set(seeds)) == 5
    assert candidate_seeds(7, 3) == [7, 8, 9]


def test_bad_requests_fail_before_generating(scorer):
    pipe = pipeline("wan2.1")
    calls = []
    hook = pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    reward = descore_reward(scorer, "think_free")
    kwargs = call_kwargs("wan2.1")
    try:
        with pytest.raises(ConfigError, match="num_candidates must be an integer >= 1, got 0"):
            best_of_n(pipe, PROMPT, 0, reward, **kwargs)
        with pytest.raises(ConfigError, match="seeds must be 3 integers"):
            best_of_n(pipe, PROMPT, 3, reward, seeds=[1, 2], **kwargs)
        with pytest.raises(ConfigError, match="repeat"):
            best_of_n(pipe, PROMPT, 2, reward, seeds=[4, 4], **kwargs)
        with pytest.raises(ConfigError, match=r"sets \['generator'\] itself"):
            best_of_n(pipe, PROMPT, 2, reward, generator=torch.Generator(), **kwargs)
        with pytest.raises(ConfigError, match="output_type must be 'pt', 'np' or 'pil'"):
            best_of_n(pipe, PROMPT, 2, reward, output_type="latent", **kwargs)
        with pytest.raises(ConfigError, match="batch_size"):
            best_of_n(pipe, PROMPT, 2, reward, batch_size=0, **kwargs)
        slow_sampler = descore_reward(make_scorer(fps=2.0), "think_free")
        with pytest.raises(VideoError, match=r"9 frame\(s\) at 16 fps .* Generate at least 16 frames"):
            best_of_n(pipe, PROMPT, 2, slow_sampler, **kwargs)
        with pytest.raises(ConfigError, match="supported pipelines: WanPipeline"):
            best_of_n(torch.nn.Linear(2, 2), PROMPT, 2, reward)
    finally:
        hook.remove()
    assert not calls
