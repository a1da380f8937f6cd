"""Per-family latent -> pixel decoding: parity with the pipelines' own output, frame subsets, gradients, VAE knobs."""

from __future__ import annotations

import pytest
import torch

from descore.errors import ConfigError
from reward_guidance.decoding import frame_subset, subset_fps
from reward_guidance.families import decode_latents, family_adapter
from reward_guidance.scoped import frozen, gradient_checkpointing
from tests.reward_guidance.conftest import FAMILIES, PROMPT, call_kwargs, generate, pipeline
from toyworld.tiny_models import build_video_pipeline


def latents_of(pipe, family: str, seed: int = 0, **kwargs) -> torch.Tensor:
    return pipe(
        PROMPT,
        generator=torch.Generator().manual_seed(seed),
        output_type="latent",
        **call_kwargs(family, **kwargs),
    ).frames


def ltx_grid(num_frames: int = 9, size: int = 32) -> tuple[int, int, int]:
    pipe = pipeline("ltx")
    spatial = pipe.vae_spatial_compression_ratio
    return (num_frames - 1) // pipe.vae_temporal_compression_ratio + 1, size // spatial, size // spatial


@pytest.mark.parametrize("family", FAMILIES)
def test_decoding_latents_gives_the_pipelines_own_frames(family):
    pipe = pipeline(family)
    grid = ltx_grid() if family == "ltx" else None
    frames = decode_latents(pipe, latents_of(pipe, family, seed=3), grid=grid)
    expected = generate(pipe, family, seed=3)
    assert frames.shape == expected.shape == (1, 9, 3, 32, 32)
    assert torch.equal(frames, expected)


def test_cogvideox_even_latent_count_decodes_to_what_the_pipeline_returns():
    # 8 requested frames -> 2 latent frames; CogVideoX's VAE doubles both twice: 8 frames, not (2 - 1) * 4 + 1.
    pipe = pipeline("cogvideox")
    latents = latents_of(pipe, "cogvideox", seed=3, num_frames=8)
    decoder = family_adapter(pipe).decoder
    frames = decoder(latents)
    assert decoder.num_frames(latents) == frames.shape[1] == 8
    assert torch.equal(frames, generate(pipe, "cogvideox", seed=3, num_frames=8))
    assert torch.equal(decoder(latents, frames=[0, 7]), frames[:, [0, 7]])


def test_ltx_timestep_conditioned_decoder_matches_the_pipeline():
    pipe = build_video_pipeline("ltx", seed=1, overrides={"vae": {"timestep_conditioning": True}})
    pipe.set_progress_bar_config(disable=True)
    latents = latents_of(pipe, "ltx", seed=2)
    expected = generate(pipe, "ltx", seed=2, decode_timestep=0.05, decode_noise_scale=0.0)
    frames = family_adapter(pipe, decode_timestep=0.05, decode_noise_scale=0.0).decoder(
        latents, grid=ltx_grid()
    )
    assert torch.equal(frames, expected)
    plain = family_adapter(pipe).decoder(latents, grid=ltx_grid())
    assert not torch.equal(plain, expected)  # the decode timestep is an input of this decoder


def test_ltx_packed_latents_need_their_grid():
    pipe = pipeline("ltx")
    latents = latents_of(pipe, "ltx")
    with pytest.raises(ConfigError, match=r"pass grid=\(latent_frames, latent_height, latent_width\)"):
        decode_latents(pipe, latents)
    with pytest.raises(ConfigError, match="makes 128 tokens, but the latents hold 192"):
        decode_latents(pipe, latents, grid=(2, 8, 8))


def test_wan_frame_subset_decodes_only_the_latent_prefix_and_matches_the_full_decode():
    pipe = pipeline("wan2.1")
    latents = latents_of(pipe, "wan2.1", num_frames=17)
    full = decode_latents(pipe, latents)
    calls = []
    hook = pipe.vae.decoder.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[2]))
    try:
        first = decode_latents(pipe, latents, frames=5)
        chosen = decode_latents(pipe, latents, frames=[0, 2, 4])
    finally:
        hook.remove()
    # the causal Wan VAE decodes one latent frame per decoder call: 5 pixel frames need 2 of the 5 latent frames
    assert len(calls) == 2 + 2
    assert torch.equal(first, full[:, :5])
    assert torch.equal(chosen, full[:, [0, 2, 4]])


@pytest.mark.parametrize("family", ["cogvideox", "hunyuanvideo"])
def test_non_causal_vaes_decode_everything_then_select(family):
    pipe = pipeline(family)
    latents = latents_of(pipe, family)
    full = decode_latents(pipe, latents)
    assert torch.equal(decode_latents(pipe, latents, frames=[1, 8]), full[:, [1, 8]])


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_on_demand_reach_the_latents_not_the_vae(family):
    pipe = pipeline(family)
    grid = ltx_grid() if family == "ltx" else None
    latents = latents_of(pipe, family).requires_grad_(True)
    frames = decode_latents(pipe, latents, grad=True, grid=grid, frames=[0, 4])
    assert frames.requires_grad and frames.shape[1] == 2
    frames.mean().backward()
    assert latents.grad is not None and latents.grad.abs().sum() > 0
    assert all(p.grad is None and p.requires_grad for p in pipe.vae.parameters())
    assert not decode_latents(pipe, latents, grid=grid).requires_grad


@pytest.mark.parametrize("family", ["cogvideox", "ltx", "hunyuanvideo"])
def test_vae_checkpointing_gives_the_same_gradient(family):
    pipe = pipeline(family)
    grid = ltx_grid() if family == "ltx" else None
    latents = latents_of(pipe, family)
    grads, calls = [], []
    for checkpointing in (False, True):
        x = latents.clone().requires_grad_(True)
        count = []
        hooks = [m.register_forward_hook(lambda *a, c=count: c.append(1)) for m in pipe.vae.decoder.modules()]
        # forward and backward under the same module state: checkpointing recomputes blocks in the backward
        with frozen([pipe.vae]), gradient_checkpointing([pipe.vae], enabled=checkpointing):
            decode_latents(pipe, x, grad=True, grid=grid).pow(2).mean().backward()
        for hook in hooks:
            hook.remove()
        grads.append(x.grad)
        calls.append(len(count))
    assert calls[1] > calls[0]  # the checkpointed blocks ran again in the backward pass
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    assert not pipe.vae.is_gradient_checkpointing


def test_slicing_and_tiling_are_set_for_the_call_only():
    pipe = pipeline("wan2.1")
    latents = torch.cat([latents_of(pipe, "wan2.1", seed=s) for s in (0, 1)])
    full = decode_latents(pipe, latents)
    sliced = decode_latents(pipe, latents, slicing=True)
    assert torch.allclose(sliced, full, atol=1e-6)
    tiles = {
        "tile_sample_min_height": 16,
        "tile_sample_min_width": 16,
        "tile_sample_stride_height": 8,
        "tile_sample_stride_width": 8,
    }
    tiled = decode_latents(pipe, latents, tiling=tiles)
    assert tiled.shape == full.shape and not torch.equal(tiled, full)  # blended tiles differ from one pass
    assert not pipe.vae.use_slicing and not pipe.vae.use_tiling
    assert pipe.vae.tile_sample_min_height == 256


def test_frame_subsets_are_validated_and_keep_their_rate():
    assert frame_subset(None, 9) is None
    assert frame_subset(3, 9) == [0, 1, 2]
    assert frame_subset([0, 4, 8], 9) == [0, 4, 8]
    for bad, message in [
        (0, "1..9"),
        (10, "1..9"),
        ([4, 2], "strictly increasing"),
        ([0, 9], "0..8"),
        ([], "empty"),
    ]:
        with pytest.raises(ConfigError, match=message):
            frame_subset(bad, 9)
    assert subset_fps([0, 4, 8], 16.0) == 4.0
    assert subset_fps([0, 1, 5], 16.0) is None
    assert subset_fps(None, 16.0) == 16.0
