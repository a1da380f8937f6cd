"""Family adapters and the x0 look-ahead: the replayed prediction is the one the next step really steps on."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel, UniPCMultistepScheduler, WanPipeline

from descore.errors import ConfigError
from reward_guidance.families import WanAdapter, family_adapter, supported_pipelines
from reward_guidance.guidance import carry_through_scheduler
from reward_guidance.lookahead import Lookahead
from tests.reward_guidance.conftest import FAMILIES, PROMPT, call_kwargs, generate, pipeline


def run_with_lookahead(family: str, steps: int = 3, cfg_scale: float | None = None, **kwargs):
    """Run the pipeline; after each step predict the next latents with a copy of the scheduler stepped on the
    look-ahead prediction. Returns (predicted, observed latents per step, x0 checks against the scheduler)."""
    pipe = pipeline(family)
    adapter = family_adapter(pipe)
    lookahead = Lookahead(adapter)
    predicted, observed, x0_pairs = {}, {}, []

    def callback(p, i, t, tensors):
        latents = tensors["latents"]
        observed[i] = latents.clone()
        prediction = lookahead.prediction(latents, i, t, cfg_scale=cfg_scale)
        if prediction is not None:
            scheduler = copy.deepcopy(p.scheduler)
            out = scheduler.step(prediction, adapter.timestep(i + 1), latents)
            predicted[i + 1] = out.prev_sample
            x0 = adapter.x0(latents, prediction, i + 1)
            if getattr(out, "pred_original_sample", None) is not None:  # DDIM reports its x0
                x0_pairs.append((x0, out.pred_original_sample))
            elif isinstance(scheduler, UniPCMultistepScheduler):  # UniPC keeps the x0 it converted
                x0_pairs.append((x0, scheduler.model_outputs[-1]))
            cond = lookahead.prediction(latents, i, t, cfg=False)
            assert torch.allclose(cond, lookahead.prediction(latents, i, t, cfg_scale=1.0), atol=1e-5)
        lookahead.recorder.step_done()
        return tensors

    try:
        pipe(
            PROMPT,
            generator=torch.Generator().manual_seed(0),
            output_type="latent",
            callback_on_step_end=callback,
            callback_on_step_end_tensor_inputs=["latents"],
            **call_kwargs(family, num_inference_steps=steps, **kwargs),
        )
    finally:
        lookahead.close()
    return predicted, observed, x0_pairs


@pytest.mark.parametrize("family", FAMILIES)
def test_lookahead_prediction_is_what_the_next_step_steps_on(family):
    predicted, observed, x0_pairs = run_with_lookahead(family)
    assert sorted(predicted) == [1, 2]
    for i, latents in predicted.items():
        assert torch.allclose(latents, observed[i], atol=1e-5), (
            family,
            i,
            (latents - observed[i]).abs().max(),
        )
    for x0, reference in x0_pairs:
        assert torch.allclose(x0, reference.float(), atol=1e-5)
    if family in ("wan2.1", "wan2.2", "cogvideox"):
        assert len(x0_pairs) == 2


def test_wan22_lookahead_switches_to_the_low_noise_expert():
    adapter = family_adapter(pipeline("wan2.2"))
    boundary = 0.875 * 1000
    assert adapter.expert_at(boundary) is adapter.pipe.transformer
    assert adapter.expert_at(boundary - 1) is adapter.pipe.transformer_2
    adapter.pipe._guidance_scale, adapter.pipe._guidance_scale_2 = 4.0, 3.0
    assert (adapter.cfg_scale(999.0), adapter.cfg_scale(600.0)) == (4.0, 3.0)


def test_hunyuan_true_cfg_needs_its_scale():
    with pytest.raises(ConfigError, match="pass cfg_scale="):
        run_with_lookahead("hunyuanvideo", negative_prompt="blurry", true_cfg_scale=2.0)
    predicted, observed, _ = run_with_lookahead(
        "hunyuanvideo", cfg_scale=2.0, negative_prompt="blurry", true_cfg_scale=2.0
    )
    for i, latents in predicted.items():
        assert torch.allclose(latents, observed[i], atol=1e-5)


def test_lookahead_without_recorded_calls_says_how_to_fix_it():
    adapter = family_adapter(pipeline("wan2.1"))
    lookahead = Lookahead(adapter)
    lookahead.close()
    assert not adapter.pipe.transformer._forward_pre_hooks
    with pytest.raises(ConfigError, match="create the guidance callback before calling the pipeline"):
        lookahead.prediction(torch.zeros(1, 16, 3, 4, 4), 0, torch.tensor(999))


def test_unsupported_pipelines_are_refused_with_the_supported_list():
    unet = UNet2DModel(
        sample_size=8,
        block_out_channels=(8,),
        layers_per_block=1,
        down_block_types=("DownBlock2D",),
        up_block_types=("UpBlock2D",),
        norm_num_groups=8,
    )
    with pytest.raises(ConfigError) as error:
        family_adapter(DDPMPipeline(unet=unet, scheduler=DDPMScheduler()))
    assert "DDPMPipeline is not supported" in str(error.value)
    for name in ("WanPipeline", "CogVideoXPipeline", "LTXPipeline", "HunyuanVideoPipeline"):
        assert name in str(error.value) and name in supported_pipelines()


def test_subclasses_of_supported_pipelines_use_their_family():
    class MyWan(WanPipeline):
        pass

    pipe = pipeline("wan2.1")
    mine = MyWan(**{k: v for k, v in pipe.components.items()})
    assert isinstance(family_adapter(mine), WanAdapter)


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_names_frames_and_batches(family):
    pipe = pipeline(family)
    adapter = family_adapter(pipe)
    assert adapter.family == family
    assert adapter.generated_frames({"num_frames": 10}) == 9  # rounded to 1 + 4k, as the pipelines do
    # the pipelines' own defaults (CogVideoX: the transformer's sample_frames, 9 for the tiny one)
    defaults = {"wan2.1": 81, "wan2.2": 81, "cogvideox": 9, "ltx": 161, "hunyuanvideo": 129}
    assert adapter.generated_frames({}) == defaults[family]
    # What the pipeline really makes: 10 frames give 9 everywhere; of 8, Wan rounds up to 9 (8 % 4 != 1), the
    # others keep 2 latent frames, which CogVideoX's VAE decodes to 8 (an even batch doubles every frame).
    made = {"wan2.1": 9, "wan2.2": 9, "cogvideox": 8, "ltx": 5, "hunyuanvideo": 5}
    for requested, expected in ((10, 9), (8, made[family])):
        frames = generate(pipe, family, 0, num_frames=requested, num_inference_steps=2).shape[1]
        assert frames == adapter.generated_frames({"num_frames": requested}) == expected
    batch = adapter.batch_kwargs(PROMPT, 3)
    assert batch == (
        {"prompt": [PROMPT] * 3} if family == "cogvideox" else {"prompt": PROMPT, "num_videos_per_prompt": 3}
    )


def test_carried_update_survives_the_unipc_corrector():
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
    )
    scheduler.set_timesteps(4)
    generator = torch.Generator().manual_seed(0)
    x, first, second, delta = (torch.randn(1, 4, 2, 4, 4, generator=generator) for _ in range(4))
    after_first = scheduler.step(first, scheduler.timesteps[0], x).prev_sample
    carried, dropped = copy.deepcopy(scheduler), copy.deepcopy(scheduler)
    carry_through_scheduler(carried, delta, 1)
    scheduler.step(second, scheduler.timesteps[1], after_first)
    # a velocity that gives the updated sample the same x0 (x0 = x - sigma * v), so the model terms are equal
    same_x0 = second + delta / scheduler.sigmas[1]
    carried.step(same_x0, carried.timesteps[1], after_first + delta)
    dropped.step(same_x0, dropped.timesteps[1], after_first + delta)
    # the corrected sample (kept as last_sample) moves by exactly the update; without carrying it, by nothing
    assert torch.allclose(carried.last_sample - scheduler.last_sample, delta, atol=1e-5)
    assert torch.allclose(dropped.last_sample, scheduler.last_sample, atol=1e-6)
