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
from toyworld.tiny_models.tokenizer import (
    QWEN_VL_ADDED_TOKENS,
    build_clip_tokenizer,
    build_llama_tokenizer,
    build_qwen_tokenizer,
    build_t5_tokenizer,
    training_corpus,
)
from toyworld.tiny_models.video_pipelines import (
    PIPELINE_CALL_DEFAULTS,
    PIPELINE_FAMILIES,
    build_video_pipeline,
    save_video_pipeline,
)

__all__ = [
    "PIPELINE_CALL_DEFAULTS",
    "PIPELINE_FAMILIES",
    "QWEN_VL_ADDED_TOKENS",
    "QWEN_VL_FAMILIES",
    "QWEN_VL_SIZES",
    "build_clip_tokenizer",
    "build_llama_tokenizer",
    "build_qwen_tokenizer",
    "build_qwen_vl",
    "build_t5_tokenizer",
    "build_video_pipeline",
    "qwen_vl_config",
    "save_qwen_vl",
    "save_video_pipeline",
    "training_corpus",
    "video_processor_settings",
]
