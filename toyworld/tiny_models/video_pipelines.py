"""Tiny text-to-video diffusers pipelines with the real classes, offline text encoders and deterministic tokenizers.

Families: ``wan2.1`` and ``wan2.2`` (:class:`~diffusers.WanPipeline`, Wan2.2 with a second expert for the low-noise
steps), ``cogvideox`` (:class:`~diffusers.CogVideoXPipeline`), ``ltx`` (:class:`~diffusers.LTXPipeline`) and
``hunyuanvideo`` (:class:`~diffusers.HunyuanVideoPipeline`). Every component is built from a config under a forked
RNG seeded from (seed, component), so the same seed gives bit-identical weights, outputs and saved files. Each
pipeline generates a 9-frame 32x32 video in well under a second on a CPU with :data:`PIPELINE_CALL_DEFAULTS`, and
round-trips through ``save_pretrained`` / ``DiffusionPipeline.from_pretrained``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKLCogVideoX,
    AutoencoderKLHunyuanVideo,
    AutoencoderKLLTXVideo,
    AutoencoderKLWan,
    CogVideoXDDIMScheduler,
    CogVideoXPipeline,
    CogVideoXTransformer3DModel,
    DiffusionPipeline,
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideoPipeline,
    HunyuanVideoTransformer3DModel,
    LTXPipeline,
    LTXVideoTransformer3DModel,
    UniPCMultistepScheduler,
    WanPipeline,
    WanTransformer3DModel,
)
from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    LlamaConfig,
    LlamaModel,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    T5Config,
    T5EncoderModel,
    UMT5Config,
    UMT5EncoderModel,
)

from descore.errors import ConfigError
from toyworld.tiny_models.tokenizer import build_clip_tokenizer, build_llama_tokenizer, build_t5_tokenizer

logger = logging.getLogger(__name__)

#: The CogVideoX-2b scheduler settings: v-prediction DDIM with zero terminal SNR.
COGVIDEOX_SCHEDULER: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
    "clip_sample": False,
    "set_alpha_to_one": True,
    "snr_shift_scale": 3.0,
}

PIPELINE_FAMILIES: tuple[str, ...] = ("wan2.1", "wan2.2", "cogvideox", "ltx", "hunyuanvideo")

_SHARED_CALL = {
    "height": 32,
    "width": 32,
    "num_frames": 9,
    "num_inference_steps": 3,
    "max_sequence_length": 32,
}

#: Call arguments that make every tiny pipeline generate a 9-frame 32x32 video in a few steps, with the guidance
#: the real checkpoints use. ``pipe(prompt, **PIPELINE_CALL_DEFAULTS[family], generator=..., output_type=...)``.
PIPELINE_CALL_DEFAULTS: dict[str, dict[str, Any]] = {
    "wan2.1": {**_SHARED_CALL, "guidance_scale": 5.0},
    "wan2.2": {**_SHARED_CALL, "guidance_scale": 4.0, "guidance_scale_2": 3.0},
    "cogvideox": {**_SHARED_CALL, "guidance_scale": 6.0},
    "ltx": {**_SHARED_CALL, "guidance_scale": 3.0},
    # Guidance-distilled: the scale is an input of the transformer, not classifier-free guidance. HunyuanVideo's
    # own prompt template is added below, once the toy Llama tokenizer can count its tokens.
    "hunyuanvideo": {**_SHARED_CALL, "guidance_scale": 6.0},
}

# Component names a caller may override, per family (the keys of ``overrides``).
_OVERRIDABLE = {
    "wan2.1": ("transformer", "vae", "text_encoder"),
    "wan2.2": ("transformer", "transformer_2", "vae", "text_encoder"),
    "cogvideox": ("transformer", "vae", "text_encoder"),
    "ltx": ("transformer", "vae", "text_encoder"),
    "hunyuanvideo": ("transformer", "vae", "text_encoder", "text_encoder_2"),
}
_COMPONENT_INDEX = {"text_encoder": 0, "text_encoder_2": 1, "vae": 2, "transformer": 3, "transformer_2": 4}


def _seeded(seed: int, component: str, factory: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Build one module under a forked RNG seeded from (seed, component), in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1_000_003 + _COMPONENT_INDEX[component])
        return factory().eval()


def _merge_model_kwargs(family: str, component: str, cls: type, defaults: dict, overrides: Mapping) -> dict:
    """Defaults updated by the caller's overrides, refusing keys the model's constructor does not take."""
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise ConfigError(
            f"overrides[{component!r}] for {family}: {cls.__name__} has no argument(s) {unknown}; "
            f"accepted: {sorted(accepted)}"
        )
    return {**defaults, **overrides}


def _text_config(
    family: str, component: str, cls: type[PretrainedConfig], defaults: dict, overrides: Mapping
) -> PretrainedConfig:
    """A text-encoder config from defaults and overrides, refusing fields the config class does not have."""
    known = set(cls().to_dict())
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"overrides[{component!r}] for {family}: {cls.__name__} has no field(s) {unknown}")
    return cls(**{**defaults, **overrides})


def _t5_encoder(
    family: str,
    seed: int,
    tokenizer: PreTrainedTokenizerBase,
    overrides: Mapping[str, Mapping[str, Any]],
    config_cls: type[PretrainedConfig],
    model_cls: type[PreTrainedModel],
) -> PreTrainedModel:
    """A tiny T5-family text encoder (UMT5 for Wan, T5 for CogVideoX and LTX) over the toy T5 vocabulary."""
    defaults = {
        "vocab_size": len(tokenizer),
        "d_model": 32,
        "d_ff": 64,
        "d_kv": 8,
        "num_layers": 2,
        "num_heads": 4,
        "relative_attention_num_buckets": 8,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "decoder_start_token_id": tokenizer.pad_token_id,
    }
    config = _text_config(family, "text_encoder", config_cls, defaults, overrides.get("text_encoder", {}))
    return _seeded(seed, "text_encoder", lambda: model_cls(config))


def _wan(family: str, seed: int, overrides: Mapping[str, Mapping[str, Any]]) -> WanPipeline:
    tokenizer = build_t5_tokenizer()
    text_encoder = _t5_encoder(family, seed, tokenizer, overrides, UMT5Config, UMT5EncoderModel)
    vae_overrides = dict(overrides.get("vae", {}))
    z_dim = vae_overrides.get("z_dim", 16)
    dim_mult = list(vae_overrides.get("dim_mult", [1, 1, 1, 1]))
    temporal = list(vae_overrides.get("temperal_downsample", [False, True, True]))
    vae_defaults = {
        "base_dim": 3,
        "z_dim": z_dim,
        "dim_mult": dim_mult,
        "num_res_blocks": 1,
        "temperal_downsample": temporal,
        # The pipeline reads the compression factors from the config: keep them true to the block layout.
        "scale_factor_spatial": 2 ** (len(dim_mult) - 1),
        "scale_factor_temporal": 2 ** sum(bool(flag) for flag in temporal),
    }
    if z_dim != 16:  # the real statistics are per channel of a 16-channel latent; a new size starts neutral
        vae_defaults.update(latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim)
    vae_kwargs = _merge_model_kwargs(family, "vae", AutoencoderKLWan, vae_defaults, vae_overrides)
    vae = _seeded(seed, "vae", lambda: AutoencoderKLWan(**vae_kwargs))
    transformer_defaults = {
        "patch_size": (1, 2, 2),
        "num_attention_heads": 2,
        "attention_head_dim": 12,
        "in_channels": vae.config.z_dim,
        "out_channels": vae.config.z_dim,
        "text_dim": text_encoder.config.d_model,
        "freq_dim": 256,
        "ffn_dim": 32,
        "num_layers": 2,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "rope_max_seq_len": 32,
    }
    experts = ("transformer", "transformer_2") if family == "wan2.2" else ("transformer",)
    transformers = {}
    for name in experts:
        kwargs = _merge_model_kwargs(
            family, name, WanTransformer3DModel, transformer_defaults, overrides.get(name, {})
        )
        transformers[name] = _seeded(seed, name, lambda kwargs=kwargs: WanTransformer3DModel(**kwargs))
    # As the real Wan2.1 / Wan2.2 checkpoints: UniPC on flow-matching sigmas.
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, num_train_timesteps=1000
    )
    boundary = {"boundary_ratio": 0.875} if family == "wan2.2" else {}
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler,
        **transformers,
        **boundary,
    )


def _cogvideox(family: str, seed: int, overrides: Mapping[str, Mapping[str, Any]]) -> CogVideoXPipeline:
    tokenizer = build_t5_tokenizer()
    text_encoder = _t5_encoder(family, seed, tokenizer, overrides, T5Config, T5EncoderModel)
    vae_defaults = {
        "down_block_types": ("CogVideoXDownBlock3D",) * 4,
        "up_block_types": ("CogVideoXUpBlock3D",) * 4,
        "block_out_channels": (8, 8, 8, 8),
        "latent_channels": 4,
        "layers_per_block": 1,
        "norm_num_groups": 2,
        "temporal_compression_ratio": 4,
        "sample_height": 32,
        "sample_width": 32,
    }
    vae_kwargs = _merge_model_kwargs(
        family, "vae", AutoencoderKLCogVideoX, vae_defaults, overrides.get("vae", {})
    )
    vae = _seeded(seed, "vae", lambda: AutoencoderKLCogVideoX(**vae_kwargs))
    spatial = 2 ** (len(vae.config.block_out_channels) - 1)
    transformer_defaults = {
        "num_attention_heads": 4,
        "attention_head_dim": 8,
        "in_channels": vae.config.latent_channels,
        "out_channels": vae.config.latent_channels,
        "time_embed_dim": 2,
        "text_embed_dim": text_encoder.config.d_model,
        "num_layers": 1,
        "sample_width": PIPELINE_CALL_DEFAULTS[family]["width"] // spatial,
        "sample_height": PIPELINE_CALL_DEFAULTS[family]["height"] // spatial,
        "sample_frames": PIPELINE_CALL_DEFAULTS[family]["num_frames"],
        "patch_size": 2,
        "temporal_compression_ratio": vae.config.temporal_compression_ratio,
        "max_text_seq_length": PIPELINE_CALL_DEFAULTS[family]["max_sequence_length"],
    }
    kwargs = _merge_model_kwargs(
        family,
        "transformer",
        CogVideoXTransformer3DModel,
        transformer_defaults,
        overrides.get("transformer", {}),
    )
    transformer = _seeded(seed, "transformer", lambda: CogVideoXTransformer3DModel(**kwargs))
    scheduler = CogVideoXDDIMScheduler(**COGVIDEOX_SCHEDULER)
    return CogVideoXPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )


def _ltx(family: str, seed: int, overrides: Mapping[str, Mapping[str, Any]]) -> LTXPipeline:
    tokenizer = build_t5_tokenizer()
    text_encoder = _t5_encoder(family, seed, tokenizer, overrides, T5Config, T5EncoderModel)
    vae_defaults = {
        "latent_channels": 8,
        "block_out_channels": (8, 8, 8, 8),
        "decoder_block_out_channels": (8, 8, 8, 8),
        "layers_per_block": (1, 1, 1, 1, 1),
        "decoder_layers_per_block": (1, 1, 1, 1, 1),
        "spatio_temporal_scaling": (True, True, False, False),
        "decoder_spatio_temporal_scaling": (True, True, False, False),
        "decoder_inject_noise": (False,) * 5,
        "upsample_residual": (False,) * 4,
        "upsample_factor": (1,) * 4,
        "timestep_conditioning": False,
        "patch_size": 1,
        "patch_size_t": 1,
        "encoder_causal": True,
        "decoder_causal": False,
    }
    vae_kwargs = _merge_model_kwargs(
        family, "vae", AutoencoderKLLTXVideo, vae_defaults, overrides.get("vae", {})
    )
    vae = _seeded(seed, "vae", lambda: AutoencoderKLLTXVideo(**vae_kwargs))
    transformer_defaults = {
        "in_channels": vae.config.latent_channels,
        "out_channels": vae.config.latent_channels,
        "patch_size": 1,
        "patch_size_t": 1,
        "num_attention_heads": 4,
        "attention_head_dim": 8,
        "cross_attention_dim": 32,
        "num_layers": 1,
        "caption_channels": text_encoder.config.d_model,
    }
    kwargs = _merge_model_kwargs(
        family,
        "transformer",
        LTXVideoTransformer3DModel,
        transformer_defaults,
        overrides.get("transformer", {}),
    )
    transformer = _seeded(seed, "transformer", lambda: LTXVideoTransformer3DModel(**kwargs))
    # LTX-Video's scheduler: flow matching with resolution-dependent shift.
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.95,
        max_shift=2.05,
        base_image_seq_len=1024,
        max_image_seq_len=4096,
        shift_terminal=0.1,
    )
    return LTXPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )


def _hunyuanvideo(family: str, seed: int, overrides: Mapping[str, Mapping[str, Any]]) -> HunyuanVideoPipeline:
    tokenizer = build_llama_tokenizer()
    llama_defaults = {
        "vocab_size": len(tokenizer),
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "num_hidden_layers": 3,  # the pipeline reads the hidden state two layers below the top
        "max_position_embeddings": 512,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    llama = _text_config(
        family, "text_encoder", LlamaConfig, llama_defaults, overrides.get("text_encoder", {})
    )
    text_encoder = _seeded(seed, "text_encoder", lambda: LlamaModel(llama))
    tokenizer_2 = build_clip_tokenizer()
    clip_defaults = {
        "vocab_size": len(tokenizer_2),
        "hidden_size": 8,
        "intermediate_size": 16,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "max_position_embeddings": tokenizer_2.model_max_length,
        "bos_token_id": tokenizer_2.bos_token_id,
        "eos_token_id": tokenizer_2.eos_token_id,
        "pad_token_id": tokenizer_2.pad_token_id,
    }
    clip = _text_config(
        family, "text_encoder_2", CLIPTextConfig, clip_defaults, overrides.get("text_encoder_2", {})
    )
    text_encoder_2 = _seeded(seed, "text_encoder_2", lambda: CLIPTextModel(clip))
    vae_defaults = {
        "latent_channels": 4,
        "down_block_types": ("HunyuanVideoDownBlock3D",) * 4,
        "up_block_types": ("HunyuanVideoUpBlock3D",) * 4,
        "block_out_channels": (8, 8, 8, 8),
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "spatial_compression_ratio": 8,
        "temporal_compression_ratio": 4,
        "mid_block_add_attention": True,
    }
    vae_kwargs = _merge_model_kwargs(
        family, "vae", AutoencoderKLHunyuanVideo, vae_defaults, overrides.get("vae", {})
    )
    vae = _seeded(seed, "vae", lambda: AutoencoderKLHunyuanVideo(**vae_kwargs))
    transformer_defaults = {
        "in_channels": vae.config.latent_channels,
        "out_channels": vae.config.latent_channels,
        "num_attention_heads": 2,
        "attention_head_dim": 10,
        "num_layers": 1,
        "num_single_layers": 1,
        "num_refiner_layers": 1,
        "patch_size": 1,
        "patch_size_t": 1,
        "guidance_embeds": True,
        "text_embed_dim": text_encoder.config.hidden_size,
        "pooled_projection_dim": text_encoder_2.config.hidden_size,
        "rope_axes_dim": (2, 4, 4),
    }
    kwargs = _merge_model_kwargs(
        family,
        "transformer",
        HunyuanVideoTransformer3DModel,
        transformer_defaults,
        overrides.get("transformer", {}),
    )
    transformer = _seeded(seed, "transformer", lambda: HunyuanVideoTransformer3DModel(**kwargs))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=7.0)
    return HunyuanVideoPipeline(
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        vae=vae,
        scheduler=scheduler,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
    )


_BUILDERS: dict[str, Callable[[str, int, Mapping[str, Mapping[str, Any]]], DiffusionPipeline]] = {
    "wan2.1": _wan,
    "wan2.2": _wan,
    "cogvideox": _cogvideox,
    "ltx": _ltx,
    "hunyuanvideo": _hunyuanvideo,
}


def hunyuan_prompt_template() -> dict[str, Any]:
    """HunyuanVideo's own prompt template, with ``crop_start`` counted in the toy Llama tokenizer's tokens."""
    template = DEFAULT_PROMPT_TEMPLATE["template"]
    prefix = template[: template.index("{}")]
    return {"template": template, "crop_start": len(build_llama_tokenizer()(prefix).input_ids)}


PIPELINE_CALL_DEFAULTS["hunyuanvideo"]["prompt_template"] = hunyuan_prompt_template()


def build_video_pipeline(
    family: str, seed: int = 0, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> DiffusionPipeline:
    """A tiny real diffusers text-to-video pipeline of the given family, seeded and bit-identical.

    ``overrides`` maps a component name (``transformer``, ``transformer_2`` for Wan2.2, ``vae``, ``text_encoder``,
    ``text_encoder_2`` for HunyuanVideo) to constructor / config arguments that replace the tiny defaults, e.g.
    ``{"vae": {"z_dim": 8}, "transformer": {"num_layers": 4}}`` for a larger toy Wan generator. Dependent sizes follow
    (the transformer's latent channels follow the VAE, its text width the text encoder) unless overridden too.
    """
    if family not in _BUILDERS:
        raise ConfigError(
            f"family: unknown video pipeline family {family!r}; expected one of {list(PIPELINE_FAMILIES)}"
        )
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(_OVERRIDABLE[family]))
    if unknown:
        raise ConfigError(
            f"overrides: {family} has no component(s) {unknown}; overridable: {list(_OVERRIDABLE[family])}"
        )
    try:
        pipeline = _BUILDERS[family](family, seed, overrides)
    except (TypeError, ValueError, RuntimeError, AssertionError) as err:
        if not overrides:
            raise
        raise ConfigError(
            f"overrides {overrides} do not build a working {family} pipeline ({type(err).__name__}: {err})"
        ) from err
    pipeline.set_progress_bar_config(disable=True)
    logger.debug("built tiny %s pipeline (seed %d)", family, seed)
    return pipeline


def save_video_pipeline(
    directory: str | Path,
    family: str,
    seed: int = 0,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write a tiny pipeline with ``save_pretrained`` (safetensors); load it with
    ``DiffusionPipeline.from_pretrained(directory)``."""
    directory = Path(directory)
    build_video_pipeline(family, seed, overrides).save_pretrained(directory, safe_serialization=True)
    return directory
