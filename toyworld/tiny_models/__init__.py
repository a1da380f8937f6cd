"""Deterministic, offline tiny models with real architectures: a Qwen-style tokenizer, tiny Qwen-VL backbones and
tiny diffusers video pipelines. Same seed, same bytes: the rest of the project tests its loading code on them."""

from toyworld.tiny_models.tokenizer import QWEN_VL_ADDED_TOKENS, build_qwen_tokenizer, training_corpus

__all__ = ["QWEN_VL_ADDED_TOKENS", "build_qwen_tokenizer", "training_corpus"]
