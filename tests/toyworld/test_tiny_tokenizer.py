"""The toy Qwen-style tokenizer: deterministic bytes, Qwen-VL special tokens, chat template, compact toy text."""

from __future__ import annotations

import subprocess
import sys

import pytest
from transformers import AutoTokenizer

from descore.errors import ConfigError
from toyworld import tiny_models
from toyworld.tiny_models import (
    QWEN_VL_ADDED_TOKENS,
    build_clip_tokenizer,
    build_llama_tokenizer,
    build_qwen_tokenizer,
    build_t5_tokenizer,
)

VIDEO_TURN = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Rate this video."}]}]
BUILDERS = ("build_qwen_tokenizer", "build_t5_tokenizer", "build_clip_tokenizer", "build_llama_tokenizer")
_SAVE_SCRIPT = (
    "import sys, toyworld.tiny_models as tm\n"
    f"for name in {BUILDERS!r}: getattr(tm, name)().save_pretrained(sys.argv[1] + '/' + name)"
)


def _files(directory) -> dict[str, bytes]:
    paths = sorted(path for path in directory.rglob("*") if path.is_file())
    return {path.relative_to(directory).as_posix(): path.read_bytes() for path in paths}


def test_two_builds_in_two_processes_write_identical_bytes(tmp_path):
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-c", _SAVE_SCRIPT, str(tmp_path / name)], check=True)
    for name in BUILDERS:
        getattr(tiny_models, name)().save_pretrained(tmp_path / "c" / name)
    reference = _files(tmp_path / "a")
    assert {path.split("/")[0] for path in reference} == set(BUILDERS)
    assert "build_qwen_tokenizer/tokenizer.json" in reference
    assert _files(tmp_path / "b") == reference
    assert _files(tmp_path / "c") == reference


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


@pytest.mark.parametrize(
    ("builder", "expected_class"),
    [
        (build_t5_tokenizer, "T5Tokenizer"),
        (build_clip_tokenizer, "CLIPTokenizer"),
        (build_llama_tokenizer, "LlamaTokenizer"),
    ],
)
def test_text_encoder_tokenizers_round_trip_and_cover_toy_words(tmp_path, builder, expected_class):
    tokenizer = builder()
    assert type(tokenizer).__name__ == expected_class
    prompt = "A large green triangle rotates clockwise on a checkered background"
    ids = tokenizer(prompt).input_ids
    content = [i for i in ids if i not in tokenizer.all_special_ids]
    assert len(content) == len(prompt.split()), tokenizer.convert_ids_to_tokens(ids)  # one piece per word
    assert tokenizer.decode(ids, skip_special_tokens=True) == (
        prompt.lower() if expected_class == "CLIPTokenizer" else prompt
    )
    padded = tokenizer(prompt, padding="max_length", max_length=24).input_ids
    assert len(padded) == 24 and padded[-1] == tokenizer.pad_token_id
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(loaded) is type(tokenizer)
    assert loaded(prompt).input_ids == ids
    assert loaded.pad_token_id == tokenizer.pad_token_id and loaded.eos_token_id == tokenizer.eos_token_id
    assert loaded.padding_side == tokenizer.padding_side


def test_text_encoder_tokenizers_follow_their_families_conventions():
    t5 = build_t5_tokenizer()
    assert (t5.pad_token_id, t5.eos_token_id, t5.unk_token_id) == (0, 1, 2)
    assert t5("red").input_ids[-1] == t5.eos_token_id
    clip = build_clip_tokenizer()
    ids = clip("Red ball").input_ids
    assert ids[0] == clip.bos_token_id and ids[-1] == clip.eos_token_id and clip.model_max_length == 77
    llama = build_llama_tokenizer()
    assert llama("red").input_ids[0] == llama.bos_token_id and llama.padding_side == "right"
    assert llama.convert_ids_to_tokens(llama("<|eot_id|>").input_ids)[-1] == "<|eot_id|>"
    assert llama.decode(llama("Zürich 7").input_ids, skip_special_tokens=True) == "Zürich 7"  # byte fallback
