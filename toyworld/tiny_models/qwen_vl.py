"""Tiny Qwen-VL backbones with the real transformers classes, built offline from configs with a seeded init.

Families: ``qwen3_vl`` (Qwen3VLForConditionalGeneration), ``qwen3_vl_moe``, ``qwen2_5_vl`` and ``qwen2_vl``.
Sizes (parameters for qwen2_vl / qwen3_vl): ``tiny`` (unit tests, 0.3 / 0.37M), ``toy`` (the size that learned
the toy world, 1.6 / 2.0M) and ``mid`` (benchmarks, 31 / 37M). Token ids in the configs come from :func:`build_qwen_tokenizer`, and the vision
constants (patch, temporal patch, merge size) match :func:`video_processor_settings`, so a processor configured
from those settings produces exactly the grids the model expects.

The same (family, size, seed) always gives bit-identical weights; building does not touch the global RNG.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMoeConfig,
    Qwen3VLMoeForConditionalGeneration,
)

from descore.errors import ConfigError
from descore.processing import QwenVLProcessor
from descore.video_processing import QwenVideoProcessor
from toyworld.tiny_models.tokenizer import build_qwen_tokenizer

logger = logging.getLogger(__name__)

QWEN_VL_FAMILIES: tuple[str, ...] = ("qwen3_vl", "qwen3_vl_moe", "qwen2_5_vl", "qwen2_vl")
QWEN_VL_SIZES: tuple[str, ...] = ("tiny", "toy", "mid")

_MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {
    "qwen3_vl": Qwen3VLForConditionalGeneration,
    "qwen3_vl_moe": Qwen3VLMoeForConditionalGeneration,
    "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
    "qwen2_vl": Qwen2VLForConditionalGeneration,
}

# Official processor classes, as named in the real checkpoints' preprocessor files.
_VIDEO_PROCESSOR_CLASSES = {
    "qwen3_vl": "Qwen3VLVideoProcessor",
    "qwen3_vl_moe": "Qwen3VLVideoProcessor",
    "qwen2_5_vl": "Qwen2VLVideoProcessor",
    "qwen2_vl": "Qwen2VLVideoProcessor",
}
# descore's processor variant (the official processor class it mirrors) per family.
_PROCESSOR_VARIANTS = {
    "qwen3_vl": "qwen3_vl",
    "qwen3_vl_moe": "qwen3_vl",
    "qwen2_5_vl": "qwen2_5_vl",
    "qwen2_vl": "qwen2_vl",
}
_PROCESSOR_CLASSES = {
    "qwen3_vl": "Qwen3VLProcessor",
    "qwen3_vl_moe": "Qwen3VLProcessor",
    "qwen2_5_vl": "Qwen2_5_VLProcessor",
    "qwen2_vl": "Qwen2VLProcessor",
}
# Qwen3-VL normalises with mean = std = 0.5; Qwen2-VL and Qwen2.5-VL with the OpenAI CLIP statistics.
_QWEN3_MEAN_STD = ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
_CLIP_MEAN_STD = ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711])


@dataclass(frozen=True)
class _Size:
    """The knobs that differ between sizes; everything else follows the real architectures."""

    text_hidden: int
    text_intermediate: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    vision_hidden: int
    vision_intermediate: int
    vision_layers: int
    vision_heads: int
    position_grid: int  # Qwen3-VL learned position embeddings: a position_grid x position_grid table
    deepstack: tuple[int, ...]  # Qwen3-VL vision layers whose features are injected into the first LLM layers
    max_frame_side: int  # frames are resized to at most about this many pixels per side
    max_frames: int
    fps: float

    @property
    def head_dim(self) -> int:
        return self.text_hidden // self.text_heads


_SIZES: dict[str, _Size] = {
    "tiny": _Size(
        text_hidden=64,
        text_intermediate=128,
        text_layers=2,
        text_heads=4,
        text_kv_heads=2,
        vision_hidden=32,
        vision_intermediate=64,
        vision_layers=2,
        vision_heads=2,
        position_grid=8,
        deepstack=(0, 1),
        max_frame_side=64,
        max_frames=16,
        fps=8.0,
    ),
    "toy": _Size(
        text_hidden=128,
        text_intermediate=256,
        text_layers=3,
        text_heads=4,
        text_kv_heads=2,
        vision_hidden=128,
        vision_intermediate=512,
        vision_layers=2,
        vision_heads=4,
        position_grid=16,
        deepstack=(0,),
        max_frame_side=64,
        max_frames=16,
        fps=8.0,
    ),
    "mid": _Size(
        text_hidden=512,
        text_intermediate=1536,
        text_layers=8,
        text_heads=8,
        text_kv_heads=4,
        vision_hidden=256,
        vision_intermediate=1024,
        vision_layers=4,
        vision_heads=4,
        position_grid=32,
        deepstack=(1, 2, 3),
        max_frame_side=128,
        max_frames=32,
        fps=4.0,
    ),
}


def _check(family: str, size: str) -> _Size:
    if family not in QWEN_VL_FAMILIES:
        raise ConfigError(
            f"family: unknown Qwen-VL family {family!r}; expected one of {list(QWEN_VL_FAMILIES)}"
        )
    if size not in _SIZES:
        raise ConfigError(f"size: unknown tiny-model size {size!r}; expected one of {list(QWEN_VL_SIZES)}")
    return _SIZES[size]


def _patch_size(family: str) -> int:
    """Qwen3-VL uses 16-pixel patches, Qwen2-VL and Qwen2.5-VL 14-pixel ones (as the real checkpoints)."""
    return 16 if family.startswith("qwen3") else 14


def _mrope_section(family: str, head_dim: int) -> list[int]:
    """Split head_dim / 2 rotary frequencies over (time, height, width) in the real models' proportions."""
    half = head_dim // 2
    if family.startswith("qwen3"):  # real: [24, 20, 20] of 64
        height = width = (half * 20 + 32) // 64
        return [half - height - width, height, width]
    time = half // 4  # real Qwen2-VL / Qwen2.5-VL: [16, 24, 24] of 64
    height = (half - time) // 2
    return [time, height, half - time - height]


def _token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    names = {
        "image_token_id": "<|image_pad|>",
        "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>",
        "vision_end_token_id": "<|vision_end|>",
    }
    return {key: tokenizer.convert_tokens_to_ids(token) for key, token in names.items()}


def qwen_vl_config(family: str = "qwen3_vl", size: str = "tiny") -> PretrainedConfig:
    """The transformers config of a tiny Qwen-VL model (vocabulary and special ids from the toy tokenizer)."""
    spec = _check(family, size)
    tokenizer = build_qwen_tokenizer(family)
    ids = _token_ids(tokenizer)
    endoftext, im_end = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    rope = {
        "rope_type": "default",
        "rope_theta": 10000.0,
        "mrope_section": _mrope_section(family, spec.head_dim),
    }
    text: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": spec.text_hidden,
        "intermediate_size": spec.text_intermediate,
        "num_hidden_layers": spec.text_layers,
        "num_attention_heads": spec.text_heads,
        "num_key_value_heads": spec.text_kv_heads,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-6,
        "pad_token_id": endoftext,
    }
    patch = _patch_size(family)
    vision_common = {
        "depth": spec.vision_layers,
        "num_heads": spec.vision_heads,
        "patch_size": patch,
        "temporal_patch_size": 2,
        "spatial_merge_size": 2,
        "in_channels": 3,
    }
    if family.startswith("qwen3"):
        text.update(head_dim=spec.head_dim, rope_parameters={**rope, "mrope_interleaved": True})
        vision = {
            **vision_common,
            "hidden_size": spec.vision_hidden,
            "intermediate_size": spec.vision_intermediate,
            "out_hidden_size": spec.text_hidden,
            "num_position_embeddings": spec.position_grid**2,
            "deepstack_visual_indexes": list(spec.deepstack),
        }
        if family == "qwen3_vl_moe":
            text.update(
                num_experts=4,
                num_experts_per_tok=2,
                moe_intermediate_size=spec.text_intermediate // 2,
                decoder_sparse_step=1,
                bos_token_id=endoftext,
                eos_token_id=im_end,
            )
            return Qwen3VLMoeConfig(text_config=text, vision_config=vision, **ids)
        return Qwen3VLConfig(text_config=text, vision_config=vision, **ids)
    text.update(rope_parameters=rope, bos_token_id=endoftext, eos_token_id=im_end)
    if family == "qwen2_5_vl":
        vision = {
            **vision_common,
            "hidden_size": spec.vision_hidden,
            "intermediate_size": spec.vision_intermediate,
            "out_hidden_size": spec.text_hidden,
            "window_size": patch * 2 * 2,  # windows of 2 x 2 merged tokens (the real one: 4 x 4 at patch 14)
            "fullatt_block_indexes": [spec.vision_layers - 1],
        }
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
    vision = {
        **vision_common,
        "embed_dim": spec.vision_hidden,
        "mlp_ratio": spec.vision_intermediate // spec.vision_hidden,
        "hidden_size": spec.text_hidden,
    }
    return Qwen2VLConfig(text_config=text, vision_config=vision, **ids)


def video_processor_settings(family: str = "qwen3_vl", size: str = "tiny") -> dict[str, Any]:
    """The fields of an official ``video_preprocessor_config.json`` matching the tiny model's vision tower.

    ``size`` follows each family's convention: Qwen3-VL bounds the pixels of the whole resized video (frames x
    height x width), Qwen2-VL and Qwen2.5-VL the pixels of one frame.
    """
    spec = _check(family, size)
    patch = _patch_size(family)
    factor = patch * 2
    frame_pixels = spec.max_frame_side**2
    if family.startswith("qwen3"):
        mean, std = _QWEN3_MEAN_STD
        pixels = {"shortest_edge": factor * factor * 2, "longest_edge": frame_pixels * spec.max_frames}
    else:
        mean, std = _CLIP_MEAN_STD
        pixels = {"shortest_edge": factor * factor, "longest_edge": frame_pixels}
    return {
        "video_processor_type": _VIDEO_PROCESSOR_CLASSES[family],
        "processor_class": _PROCESSOR_CLASSES[family],
        "patch_size": patch,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": list(mean),
        "image_std": list(std),
        "size": pixels,
        "fps": spec.fps,
        "min_frames": 4,
        "max_frames": spec.max_frames,
        "do_sample_frames": True,
        "do_resize": True,
        "resample": 3,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "do_convert_rgb": True,
    }


def build_qwen_vl(family: str = "qwen3_vl", size: str = "tiny", seed: int = 0) -> PreTrainedModel:
    """A real ``...ForConditionalGeneration`` model of the given family and size, seeded, in eval mode.

    Initialisation runs under a forked RNG seeded with ``seed``, so the same arguments give bit-identical weights
    and the caller's global random state is left untouched.
    """
    config = qwen_vl_config(family, size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _MODEL_CLASSES[family](config)
    tokenizer = build_qwen_tokenizer(family)
    endoftext, im_end = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    # As the real instruct checkpoints: stop at <|im_end|> or <|endoftext|>, pad with <|endoftext|>; greedy.
    model.generation_config = GenerationConfig(
        bos_token_id=endoftext, eos_token_id=[im_end, endoftext], pad_token_id=endoftext, do_sample=False
    )
    logger.debug("built %s/%s (seed %d): %d parameters", family, size, seed, model.num_parameters())
    return model.eval()


def build_qwen_vl_processor(family: str = "qwen3_vl", size: str = "tiny") -> QwenVLProcessor:
    """descore's processor for the tiny model: the toy tokenizer + a video processor configured from
    :func:`video_processor_settings`, so its grids and token counts match the model's vision tower."""
    video_processor = QwenVideoProcessor.from_dict(video_processor_settings(family, size))
    return QwenVLProcessor(build_qwen_tokenizer(family), video_processor, variant=_PROCESSOR_VARIANTS[family])


def save_qwen_vl(directory: str | Path, family: str = "qwen3_vl", size: str = "tiny", seed: int = 0) -> Path:
    """Write a loadable tiny checkpoint: model (safetensors), generation config, tokenizer, chat template and the
    official ``processor_config.json``.

    Load it back with ``AutoModelForImageTextToText.from_pretrained(directory)``,
    ``AutoTokenizer.from_pretrained(directory)`` and ``descore.processing.QwenVLProcessor.from_pretrained(directory)``,
    exactly as a real Qwen-VL checkpoint.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    build_qwen_vl(family, size, seed).save_pretrained(directory, safe_serialization=True)
    build_qwen_vl_processor(family, size).save_pretrained(directory)
    return directory
