"""The toy Qwen-style tokenizer: deterministic bytes, Qwen-VL special tokens, chat template, compact toy text."""

from __future__ import annotations

import subprocess
import sys

import pytest
from transformers import AutoTokenizer

from descore.errors import ConfigError
from toyworld.tiny_models import QWEN_VL_ADDED_TOKENS, build_qwen_tokenizer

VIDEO_TURN = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Rate this video."}]}]
_SAVE_SCRIPT = "import sys; from toyworld.tiny_models import build_qwen_tokenizer; build_qwen_tokenizer().save_pretrained(sys.argv[1])"


def test_two_builds_in_two_processes_write_identical_bytes(tmp_path):
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-c", _SAVE_SCRIPT, str(tmp_path / name)], check=True)
    build_qwen_tokenizer().save_pretrained(tmp_path / "c")
    for file in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        reference = (tmp_path / "a" / file).read_bytes()
        assert (tmp_path / "b" / file).read_bytes() == reference, file
        assert (tmp_path / "c" / file).read_bytes() == reference, file


def test_special_tokens_follow_the_qwen_vl_layout():
    tokenizer = build_qwen_tokenizer()
    ids = tokenizer.convert_tokens_to_ids([token for token, _ in QWEN_VL_ADDED_TOKENS])
    assert ids == list(range(ids[0], ids[0] + len(ids))), "added tokens must be contiguous, in Qwen order"
    assert ids[-1] == len(tokenizer) - 1
    assert 1000 <= len(tokenizer) <= 2000
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.bos_token is None
    for token in ("<|vision_start|>", "<|vision_end|>", "<|video_pad|>", "<|image_pad|>", "<|im_start|>"):
        assert token in tokenizer.all_special_tokens
    text = "a<|vision_start|><|video_pad|><|video_pad|><|vision_end|>b<think>x</think>"
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(text).input_ids)
    assert tokens == [
        "a",
        "<|vision_start|>",
        "<|video_pad|>",
        "<|video_pad|>",
        "<|vision_end|>",
        "b",
        "<think>",
        "x",
        "</think>",
    ]
    # Special tokens drop out of decoded text; the think tags are ordinary added tokens, as in Qwen3.
    assert tokenizer.decode(tokenizer(text).input_ids, skip_special_tokens=True) == "ab<think>x</think>"
    assert "<reward>" not in tokenizer.get_vocab() and not any(
        "reward" in t.lower() for t in tokenizer.all_special_tokens
    )


def test_chat_template_renders_video_items_like_qwen_vl():
    qwen3 = build_qwen_tokenizer("qwen3_vl")
    rendered = qwen3.apply_chat_template(VIDEO_TURN, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Rate this video.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    without_prompt = qwen3.apply_chat_template(VIDEO_TURN, tokenize=False)
    assert without_prompt == rendered[: -len("<|im_start|>assistant\n")]
    conversation = [
        {"role": "system", "content": "Judge."},
        *VIDEO_TURN,
        {"role": "assistant", "content": "Fine."},
    ]
    assert qwen3.apply_chat_template(conversation, tokenize=False, add_vision_id=True) == (
        "<|im_start|>system\nJudge.<|im_end|>\n"
        "<|im_start|>user\nVideo 1: <|vision_start|><|video_pad|><|vision_end|>Rate this video.<|im_end|>\n"
        "<|im_start|>assistant\nFine.<|im_end|>\n"
    )
    qwen2 = build_qwen_tokenizer("qwen2_5_vl").apply_chat_template(
        VIDEO_TURN, tokenize=False, add_generation_prompt=True
    )
    assert qwen2 == "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" + rendered


def test_round_trip_through_auto_tokenizer(tmp_path):
    tokenizer = build_qwen_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = 'A red circle moves left.<|vision_start|><|video_pad|><|vision_end|> {"overall_score": 3.75}'
    assert loaded(text).input_ids == tokenizer(text).input_ids
    assert len(loaded) == len(tokenizer)
    assert loaded.chat_template == tokenizer.chat_template
    assert loaded.all_special_tokens == tokenizer.all_special_tokens
    assert loaded.apply_chat_template(
        VIDEO_TURN, add_generation_prompt=True
    ) == tokenizer.apply_chat_template(VIDEO_TURN, add_generation_prompt=True)


def test_toy_language_tokenises_compactly_and_decodes_exactly():
    tokenizer = build_qwen_tokenizer()
    sentence = "A small purple hexagon moves up quickly on a striped background, the camera zooms out."
    ids = tokenizer(sentence).input_ids
    assert tokenizer.decode(ids) == sentence
    assert len(ids) <= len(sentence.split()) + 2  # one token per word, plus the comma and full stop
    unseen = "Zebra façade ünïcode 你好 \t\n 12345"
    assert tokenizer.decode(tokenizer(unseen).input_ids) == unseen  # byte level: nothing is unknown


def test_unknown_family_is_a_config_error():
    with pytest.raises(ConfigError, match="family"):
        build_qwen_tokenizer("llama")
