"""Deterministic, offline tiny models with real architectures: a Qwen-style tokenizer, tiny Qwen-VL backbones and
tiny diffusers video pipelines. Same seed, same bytes: the rest of the project tests its loading code on them."""

from toyworld.tiny_models.qwen_vl import (
    QWEN_VL_FAMILIES,
    QWEN_VL_SIZES,
    build_qwen_vl,
    qwen_vl_config,
    save_qwen_vl,
    video_processor_settings,
)
from toyworld.tiny_models.tokenizer import QWEN_VL_ADDED_TOKENS, build_qwen_tokenizer, training_corpus

__all__ = [
    "QWEN_VL_ADDED_TOKENS",
    "QWEN_VL_FAMILIES",
    "QWEN_VL_SIZES",
    "build_qwen_tokenizer",
    "build_qwen_vl",
    "qwen_vl_config",
    "save_qwen_vl",
    "training_corpus",
    "video_processor_settings",
]
