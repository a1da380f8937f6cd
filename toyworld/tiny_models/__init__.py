"""Deterministic, offline tiny models with real architectures: a Qwen-style tokenizer, tiny Qwen-VL backbones and
tiny diffusers video pipelines. Same seed, same bytes: the rest of the project tests its loading code on them.

Names are imported lazily, so that e.g. the tokenizers can be used without importing diffusers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "QWEN_VL_ADDED_TOKENS": "tokenizer",
    "build_clip_tokenizer": "tokenizer",
    "build_llama_tokenizer": "tokenizer",
    "build_qwen_tokenizer": "tokenizer",
    "build_t5_tokenizer": "tokenizer",
    "training_corpus": "tokenizer",
    "QWEN_VL_FAMILIES": "qwen_vl",
    "QWEN_VL_SIZES": "qwen_vl",
    "build_qwen_vl": "qwen_vl",
    "build_qwen_vl_processor": "qwen_vl",
    "qwen_vl_config": "qwen_vl",
    "save_qwen_vl": "qwen_vl",
    "video_processor_settings": "qwen_vl",
    "PIPELINE_CALL_DEFAULTS": "video_pipelines",
    "PIPELINE_FAMILIES": "video_pipelines",
    "build_video_pipeline": "video_pipelines",
    "save_video_pipeline": "video_pipelines",
}

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
    "build_qwen_vl_processor",
    "build_t5_tokenizer",
    "build_video_pipeline",
    "qwen_vl_config",
    "save_qwen_vl",
    "save_video_pipeline",
    "training_corpus",
    "video_processor_settings",
]

if TYPE_CHECKING:
    from toyworld.tiny_models.qwen_vl import (
        QWEN_VL_FAMILIES,
        QWEN_VL_SIZES,
        build_qwen_vl,
        build_qwen_vl_processor,
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


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
