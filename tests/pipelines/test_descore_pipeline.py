"""DeScorePipeline on every tiny family: exact pass-through, best-of-N, guidance, batches, save/load, clear errors."""

from __future__ import annotations

import json
import logging
from typing import ClassVar

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel, WanPipeline
from diffusers.callbacks import PipelineCallback

from descore.errors import ConfigError, VideoError
from descore.scoring import DeScore
from pipelines import DeScorePipeline, DeScorePipelineOutput, GuidanceConfig
from reward_guidance import descore_reward
from tests.reward_guidance.conftest import FAMILIES, PROMPT, call_kwargs, make_scorer, pipeline

OTHER_PROMPT = "a blue cube slides to the right"
GUIDED = {"weight": 0.05, "window": (2, 3), "normalize": True}  # the last of the 3 steps only


@pytest.fixture(scope="module")
def scorer() -> DeScore:
    return make_scorer()


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def same_frames(a, b) -> bool:
    """Exact equality of two pipeline outputs of the same output_type (tensor, array or lists of PIL frames)."""
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return len(a) == len(b) and all(
        len(x) == len(y) and all(np.array_equal(np.asarray(f), np.asarray(g)) for f, g in zip(x, y))
        for x, y in zip(a, b)
    )


def shape_of(frames) -> tuple:
    if isinstance(frames, (torch.Tensor, np.ndarray)):
        return tuple(frames.shape)
    return (len(frames), len(frames[0]), *np.asarray(frames[0][0]).shape)


@pytest.mark.parametrize("family", FAMILIES)
def test_one_candidate_is_the_wrapped_pipelines_own_output(family, scorer):
    pipe = pipeline(family)
    kwargs = call_kwargs(family)
    plain = pipe(PROMPT, generator=seeded(7), **kwargs).frames  # the family's default output_type
    descore = DeScorePipeline(pipe, reward_model=scorer)
    scored = descore(PROMPT, seeds=7, think=False, **kwargs)
    assert isinstance(scored, DeScorePipelineOutput) and scored["rewards"] is scored.rewards
    assert same_frames(scored.frames, plain)
    assert scored.rewards.shape == (1, 1) and scored.seeds == [[7]] and scored.winners == [0]
    assert scored.cots == [[None]]
    as_pt = pipe(PROMPT, generator=seeded(7), output_type="pt", **kwargs).frames
    rescored = descore_reward(scorer, "think_free")(as_pt, PROMPT, fps=scored.fps)
    assert float(rescored) == pytest.approx(float(scored.rewards[0, 0]), abs=1e-5)
    unscored = descore(PROMPT, generator=seeded(7), score=False, **kwargs)
    assert same_frames(unscored.frames, plain) and unscored.rewards is None and unscored.seeds is None


@pytest.mark.parametrize("family", FAMILIES)
def test_best_of_n_keeps_the_highest_reward_and_its_seed_regenerates_it(family, scorer):
    pipe = pipeline(family)
    kwargs = call_kwargs(family)
    descore = DeScorePipeline(pipe, reward_model=scorer)
    out = descore(PROMPT, num_candidates=3, seeds=[11, 12, 13], think=False, output_type="pt", **kwargs)
    plain = pipe(PROMPT, generator=seeded(11), output_type="pt", **kwargs).frames
    assert out.frames.shape == plain.shape == (1, 9, 3, 32, 32)
    assert out.rewards.shape == (1, 3) and out.seeds == [[11, 12, 13]]
    assert out.winners == [int(out.rewards[0].argmax())]
    again = pipe(PROMPT, generator=seeded(out.seeds[0][out.winners[0]]), output_type="pt", **kwargs).frames
    assert torch.equal(again, out.frames)


@pytest.mark.parametrize("family", FAMILIES)
def test_guidance_runs_through_the_pipeline_in_every_family(family, scorer):
    pipe = pipeline(family)
    kwargs = call_kwargs(family, output_type="pt")
    descore = DeScorePipeline(pipe, reward_model=scorer)
    plain = pipe(PROMPT, generator=seeded(3), **kwargs).frames
    idle = descore(PROMPT, seeds=3, think=False, guidance={**GUIDED, "weight": 0.0}, **kwargs)
    assert torch.equal(idle.frames, plain)  # the look-ahead alone changes nothing
    guided = descore(
        PROMPT,
        num_candidates=2,
        seeds=3,
        think=False,
        guidance=GuidanceConfig(**GUIDED),
        candidate_batch_size=2,
        **kwargs,
    )
    assert guided.frames.shape == plain.shape and guided.rewards.shape == (1, 2)
    unguided = pipe(PROMPT, generator=seeded(guided.seeds[0][guided.winners[0]]), **kwargs).frames
    assert not torch.allclose(guided.frames, unguided, atol=1e-4)
    assert not pipe.transformer._forward_pre_hooks  # guidance hooks are removed after the call


def test_hunyuan_true_cfg_guidance_takes_the_calls_scale(scorer):
    # HunyuanVideo does not keep true_cfg_scale; the look-ahead of step 1 (step 2 ends clean and needs none)
    # replays both CFG calls, so it needs the scale, and DeScorePipeline passes the call's.
    guided_mid = {**GUIDED, "window": (1, 2)}
    pipe = pipeline("hunyuanvideo")
    kwargs = call_kwargs("hunyuanvideo", output_type="pt", negative_prompt="blurry", true_cfg_scale=2.0)
    descore = DeScorePipeline(pipe, reward_model=scorer)
    plain = pipe(PROMPT, generator=seeded(3), **kwargs).frames
    idle = descore(PROMPT, seeds=3, think=False, guidance={**guided_mid, "weight": 0.0}, **kwargs)
    assert torch.equal(idle.frames, plain)
    guided = descore(PROMPT, seeds=3, think=False, guidance=guided_mid, **kwargs)
    assert guided.frames.shape == plain.shape and not torch.allclose(guided.frames, plain, atol=1e-4)


def test_batched_prompts_give_one_winner_per_prompt_with_chains_of_thought(scorer):
    pipe = pipeline("wan2.1")
    kwargs = call_kwargs("wan2.1", output_type="np")
    descore = DeScorePipeline(pipe, reward_model=scorer)
    prompts = [PROMPT, OTHER_PROMPT]
    out = descore(prompts, num_candidates=2, seeds=0, negative_prompt=["blurry", "static"], **kwargs)
    assert out.frames.shape == pipe(prompts, generator=seeded(0), **kwargs).frames.shape == (2, 9, 32, 32, 3)
    assert out.rewards.shape == (2, 2) and out.seeds == [[0, 1], [2, 3]]
    assert all(isinstance(cot, str) for row in out.cots for cot in row)
    for row, (prompt, negative) in enumerate(zip(prompts, ["blurry", "static"])):
        assert out.winners[row] == int(out.rewards[row].argmax())
        seed = out.seeds[row][out.winners[row]]
        again = pipe(prompt, negative_prompt=negative, generator=seeded(seed), **kwargs).frames
        assert np.array_equal(again[0], out.frames[row])
    per_prompt = descore(prompts, num_videos_per_prompt=2, seeds=[[5], [6], [7], [8]], think=False, **kwargs)
    assert per_prompt.frames.shape == (4, 9, 32, 32, 3) and per_prompt.rewards.shape == (4, 1)
    assert per_prompt.seeds == [[5], [6], [7], [8]]
    # rows are prompt-major, as diffusers orders them; a batch of 4 differs from a batch of 1 in the last bits
    third = pipe(OTHER_PROMPT, generator=seeded(7), **kwargs).frames
    assert np.allclose(per_prompt.frames[2], third[0], atol=1e-5)
    as_tuple = descore(prompts, seeds=1, think=False, return_dict=False, **kwargs)
    assert len(as_tuple) == 5 and as_tuple[1].shape == (2, 1) and as_tuple[4] == [0, 0]


def test_cascade_thinks_only_for_the_top_k_of_each_row(scorer):
    pipe = pipeline("wan2.1")
    kwargs = call_kwargs("wan2.1", output_type="pt")
    descore = DeScorePipeline(pipe, reward_model=scorer)
    cascade = descore(PROMPT, num_candidates=3, seeds=20, cascade_top_k=1, keep_candidates=True, **kwargs)
    free = descore(PROMPT, num_candidates=3, seeds=20, think=False, **kwargs)
    assert torch.allclose(cascade.first_stage_rewards, free.rewards, atol=1e-5)
    top = int(free.rewards[0].argmax())
    assert cascade.winners == [top] and torch.isfinite(cascade.rewards[0, top])
    assert [cot is not None for cot in cascade.cots[0]] == [k == top for k in range(3)]
    assert int(torch.isnan(cascade.rewards).sum()) == 2
    assert cascade.candidates.shape == (1, 3, 9, 3, 32, 32)
    assert torch.equal(cascade.candidates[0, top], cascade.frames[0])


def test_save_and_load_rebuild_the_video_pipeline_and_the_reward_model(scorer, tmp_path, caplog):
    descore = DeScorePipeline(pipeline("wan2.2"), reward_model=scorer)
    descore.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == "DeScorePipeline" and index["_video_pipeline_class"] == "WanPipeline"
    assert index["reward_model"] == ["descore.scoring", "DeScore"] and index["boundary_ratio"] == 0.875
    assert (tmp_path / "reward_model" / "descore_config.json").is_file()
    assert (tmp_path / "transformer_2").is_dir()
    with caplog.at_level(logging.WARNING):
        # without mmap the loaded weights give bit-identical outputs (mmapped ones differ in the last bit)
        loaded = DeScorePipeline.from_pretrained(tmp_path, disable_mmap=True)
    assert not [r for r in caplog.records if "not expected" in r.getMessage()]
    assert isinstance(loaded.reward_model, DeScore) and loaded.transformer_2 is not None
    loaded.set_progress_bar_config(disable=True)
    kwargs = call_kwargs("wan2.2", output_type="pt")
    before = descore(PROMPT, num_candidates=2, seeds=4, **kwargs)
    after = loaded(PROMPT, num_candidates=2, seeds=4, **kwargs)
    assert torch.equal(before.frames, after.frames) and torch.equal(before.rewards, after.rewards)
    assert before.cots == after.cots and before.winners == after.winners
    assert isinstance(WanPipeline.from_pretrained(tmp_path), WanPipeline)  # the video part loads on its own

    pipeline("wan2.1").save_pretrained(tmp_path / "video")
    joined = DeScorePipeline.from_pretrained(tmp_path / "video", reward_model=tmp_path / "reward_model")
    assert isinstance(joined.reward_model, DeScore) and isinstance(joined.video_pipeline, WanPipeline)
    with pytest.raises(ConfigError, match="never runs code"):
        DeScorePipeline.from_pretrained(tmp_path, trust_remote_code=True)


def test_from_pipe_shares_components_and_any_reward_can_rank(scorer, tmp_path, caplog):
    pipe = pipeline("ltx")
    descore = DeScorePipeline.from_pipe(pipe, reward_model=scorer)
    assert sorted(descore.components) == sorted([*pipe.components, "reward_model"])
    assert descore.transformer is pipe.transformer and descore.reward_model is scorer
    assert DeScorePipeline.from_pipe(descore).reward_model is scorer

    def brightness(videos, prompts):
        return videos.mean(dim=(1, 2, 3, 4))

    bright = DeScorePipeline.from_pipe(descore, reward_model=brightness)
    out = bright(
        PROMPT, num_candidates=3, seeds=0, keep_candidates=True, **call_kwargs("ltx", output_type="pt")
    )
    means = out.candidates[0].mean(dim=(1, 2, 3, 4))
    assert out.winners == [int(means.argmax())] and out.cots == [[None, None, None]]
    assert torch.allclose(out.rewards[0], means)

    swapped = DeScorePipeline.from_pipe(pipeline("wan2.1"), reward_model=scorer)
    scheduler = type(swapped.scheduler).from_config(swapped.scheduler.config)
    swapped.scheduler = scheduler
    assert (
        swapped.video_pipeline.scheduler is scheduler
        and swapped.config.scheduler[1] == type(scheduler).__name__
    )
    bright.save_pretrained(tmp_path)
    assert "not a DeScore and is not saved" in caplog.text
    assert DeScorePipeline.from_pretrained(tmp_path).reward_model is None


class StepRecorder(PipelineCallback):
    tensor_inputs: ClassVar[list[str]] = ["latents", "prompt_embeds"]

    def __init__(self):
        super().__init__()
        self.seen = []

    def callback_fn(self, pipe, step_index, timestep, tensors):
        self.seen.append((step_index, sorted(tensors)))
        return tensors


def test_callbacks_pass_through_and_follow_the_guidance(scorer):
    pipe = pipeline("cogvideox")
    kwargs = call_kwargs("cogvideox", output_type="pt")
    descore = DeScorePipeline(pipe, reward_model=scorer)
    recorder = StepRecorder()
    descore(PROMPT, seeds=1, think=False, callback_on_step_end=recorder, **kwargs)
    assert recorder.seen == [(i, ["latents", "prompt_embeds"]) for i in range(3)]

    seen = []

    def after_guidance(pipe, step_index, timestep, tensors):
        seen.append((step_index, sorted(tensors), tensors["latents"].clone()))
        return {"latents": tensors["latents"]}

    descore(
        PROMPT,
        seeds=1,
        think=False,
        guidance=GUIDED,
        callback_on_step_end=after_guidance,
        callback_on_step_end_tensor_inputs=["negative_prompt_embeds"],
        **kwargs,
    )
    assert [(i, keys) for i, keys, _ in seen] == [
        (i, ["latents", "negative_prompt_embeds"]) for i in range(3)
    ]
    plain_seen = []
    pipe(
        PROMPT,
        generator=seeded(1),
        callback_on_step_end=lambda p, i, t, k: plain_seen.append(k["latents"]) or k,
        **kwargs,
    )
    assert torch.equal(seen[1][2], plain_seen[1])  # steps 0 and 1 are not guided
    assert not torch.equal(seen[2][2], plain_seen[2])  # the callback sees the guided latents of step 2


def test_bad_requests_name_the_fix_before_anything_is_generated(scorer, tmp_path):
    pipe = pipeline("wan2.1")
    kwargs = call_kwargs("wan2.1")
    descore = DeScorePipeline(pipe, reward_model=scorer)
    calls = []
    hook = pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    slow_sampler = DeScorePipeline(pipe, reward_model=make_scorer(fps=2.0))
    bad = [
        (descore, {"num_candidates": 0}, ConfigError, "num_candidates must be an integer >= 1"),
        (
            descore,
            {"num_candidates": 2, "cascade_top_k": 3},
            ConfigError,
            r"cascade_top_k .* 1..num_candidates \(2\)",
        ),
        (descore, {"num_candidates": 2, "generator": seeded(0)}, ConfigError, "pass seeds="),
        (descore, {"seeds": [1, 1], "num_candidates": 2}, ConfigError, "repeat"),
        (descore, {"num_frame": 9}, ConfigError, r"no argument\(s\) \['num_frame'\]"),
        (descore, {"output_type": "latent"}, ConfigError, "must be decoded"),
        (
            descore,
            {"guidance": {"window": (2, 5)}},
            ConfigError,
            r"outside this run's 3 steps \(indices 0..2\)",
        ),
        (descore, {"guidance": {"window": (0.9, 0.95)}}, ConfigError, "selects none of this run's 3 steps"),
        (descore, {"guidance": {"weigth": 1.0}}, ConfigError, r"unknown setting\(s\) \['weigth'\]"),
        (descore, {"guidance": {"frames": 1}}, VideoError, r"Score at least 4 frames \(guidance frames=\)"),
        (descore, {"callback_on_step_end_tensor_inputs": ["noise_pred"]}, ConfigError, "it offers"),
        (
            descore,
            {"reward": lambda v, p: v.mean((1, 2, 3, 4)), "guidance": GUIDED},
            ConfigError,
            "not differentiable",
        ),
        (
            descore,
            {"reward": lambda v, p: v.mean((1, 2, 3, 4)), "cascade_top_k": 1},
            ConfigError,
            "DeScore cascade",
        ),
        (
            descore,
            {"reward": descore_reward(scorer, "think"), "think": False},
            ConfigError,
            "think=False sets the mode of a DeScore reward model, but the reward is a DeScoreReward",
        ),
        (descore, {"think": "yes"}, ConfigError, "think must be True, False or None"),
        (slow_sampler, {}, VideoError, r"9 frame\(s\) at 16 fps .* Pass num_frames=17 or more"),
        (slow_sampler, {"num_candidates": 2}, VideoError, "lower the reward's sampling fps"),
        (DeScorePipeline(pipe), {"num_candidates": 2}, ConfigError, "load it with reward_model="),
        (
            DeScorePipeline(pipe),
            {"guidance": GUIDED},
            ConfigError,
            "guidance follows the gradient of a reward",
        ),
    ]
    try:
        for target, options, error, message in bad:
            with pytest.raises(error, match=message):
                target(PROMPT, **{**kwargs, **options})
    finally:
        hook.remove()
    assert not calls
    unet = UNet2DModel(
        sample_size=8,
        block_out_channels=(8,),
        layers_per_block=1,
        down_block_types=("DownBlock2D",),
        up_block_types=("UpBlock2D",),
        norm_num_groups=8,
    )
    ddpm = DDPMPipeline(unet=unet, scheduler=DDPMScheduler())
    with pytest.raises(ConfigError, match="DDPMPipeline is not supported.* WanPipeline"):
        DeScorePipeline(ddpm, reward_model=scorer)
    ddpm.save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="holds a DDPMPipeline; DeScorePipeline wraps WanPipeline"):
        DeScorePipeline.from_pretrained(tmp_path, reward_model=scorer)
    with pytest.raises(ConfigError, match="from_pipe"):
        DeScorePipeline(descore)
    with pytest.raises(ConfigError, match="reward_model must be"):
        DeScorePipeline(pipe, reward_model=3)


def test_the_shipped_toy_checkpoints_rerank_with_a_rationale():
    """The shipped toy generator and toy DeScore through DeScorePipeline.from_pretrained: think-then-score picks the
    candidate with the highest reward, its rationale parses, and its seed regenerates it."""
    from descore.answer import parse_answer
    from toyworld.descore_recipe import SHIPPED_CHECKPOINT
    from toyworld.generator import DEFAULT_CHECKPOINT, TOY_GENERATOR_CALL, WORLD, toy_prompts

    pipe = DeScorePipeline.from_pretrained(DEFAULT_CHECKPOINT, reward_model=SHIPPED_CHECKPOINT)
    pipe.set_progress_bar_config(disable=True)
    call = {**TOY_GENERATOR_CALL, "num_inference_steps": 4}
    prompt = toy_prompts(1, seed=3)[0]
    out = pipe(prompt, num_candidates=3, seeds=[5, 6, 7], output_type="pt", fps=float(WORLD.fps), **call)
    assert out.frames.shape == (1, WORLD.num_frames, 3, WORLD.height, WORLD.width)
    assert out.winners == [int(out.rewards[0].argmax())]
    assert parse_answer(out.cots[0][out.winners[0]]) is not None
    plain = pipe.video_pipeline(
        prompt, generator=seeded(out.seeds[0][out.winners[0]]), output_type="pt", **call
    )
    assert torch.equal(plain.frames, out.frames)


def test_guidance_raises_the_toy_descore_reward_on_the_shipped_toy_generator():
    """Same seeds with and without reward-gradient guidance (the demo's settings): the guided videos' think-free
    reward is higher on average."""
    from toyworld.demo import GUIDANCE
    from toyworld.descore_recipe import SHIPPED_CHECKPOINT
    from toyworld.generator import DEFAULT_CHECKPOINT, TOY_GENERATOR_CALL, WORLD, toy_prompts

    pipe = DeScorePipeline.from_pretrained(DEFAULT_CHECKPOINT, reward_model=SHIPPED_CHECKPOINT)
    pipe.set_progress_bar_config(disable=True)
    fps = float(WORLD.fps)
    gains = []
    for seed, prompt in enumerate(toy_prompts(3, seed=21)):
        rewards = [
            float(
                pipe(
                    prompt,
                    seeds=[seed],
                    think=False,
                    guidance=guidance,
                    output_type="pt",
                    fps=fps,
                    **TOY_GENERATOR_CALL,
                ).rewards[0, 0]
            )
            for guidance in (None, GUIDANCE)
        ]
        gains.append(rewards[1] - rewards[0])
    assert sum(gains) / len(gains) > 0.1, gains
