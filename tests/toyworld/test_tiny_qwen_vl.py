"""Tiny Qwen-VL backbones: real classes, seeded and bit-identical, and a faithful save_pretrained round trip."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoTokenizer

from descore.errors import ConfigError
from descore.processing import QwenVLProcessor
from toyworld.tiny_models import (
    QWEN_VL_FAMILIES,
    build_qwen_tokenizer,
    build_qwen_vl,
    build_qwen_vl_processor,
    qwen_vl_config,
    save_qwen_vl,
    video_processor_settings,
)

FRAMES, SIDE = 8, 64


def _video_inputs(family: str, model) -> dict[str, torch.Tensor]:
    """Prompt + one 8-frame video, laid out as the official processors do (random pixels: layout is what counts)."""
    settings = video_processor_settings(family, "tiny")
    patch, merge, temporal = settings["patch_size"], settings["merge_size"], settings["temporal_patch_size"]
    side = SIDE // (patch * merge) * patch * merge
    grid = (FRAMES // temporal, side // patch, side // patch)
    per_frame = grid[1] * grid[2] // merge**2
    tokenizer = build_qwen_tokenizer(family)
    turn = [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Rate the red circle."}]}
    ]
    text = tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
    group = "<|vision_start|>" + "<|video_pad|>" * per_frame + "<|vision_end|>"
    if family.startswith("qwen3"):  # one timestamped group per temporal patch
        expanded = "".join(f"<{0.25 * t:.1f} seconds>{group}" for t in range(grid[0]))
    else:  # one group holding every temporal patch
        expanded = "<|vision_start|>" + "<|video_pad|>" * (per_frame * grid[0]) + "<|vision_end|>"
    input_ids = tokenizer(
        text.replace("<|vision_start|><|video_pad|><|vision_end|>", expanded), return_tensors="pt"
    )
    ids = input_ids["input_ids"]
    video_id = model.config.video_token_id
    assert int((ids == video_id).sum()) == grid[0] * per_frame
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(grid[0] * grid[1] * grid[2], 3 * temporal * patch * patch, generator=generator)
    return {
        "input_ids": ids,
        "attention_mask": input_ids["attention_mask"],
        "mm_token_type_ids": (ids == video_id).int() * 2,
        "pixel_values_videos": pixels,
        "video_grid_thw": torch.tensor([grid]),
    }


def _run(model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        logits = model(**inputs).logits
        generated = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    return logits, generated


@pytest.mark.parametrize("family", QWEN_VL_FAMILIES)
def test_same_seed_gives_identical_weights_and_outputs(family):
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    first = build_qwen_vl(family, "tiny", seed=0)
    assert torch.equal(torch.rand(3), before), "building must not consume the global RNG"
    second = build_qwen_vl(family, "tiny", seed=0)
    other = build_qwen_vl(family, "tiny", seed=1)
    assert not first.training and type(first).__name__.endswith("ForConditionalGeneration")
    state, state_2, state_other = first.state_dict(), second.state_dict(), other.state_dict()
    assert all(torch.equal(state[name], state_2[name]) for name in state)
    assert any(not torch.equal(state[name], state_other[name]) for name in state)
    inputs = _video_inputs(family, first)
    logits, generated = _run(first, inputs)
    logits_2, generated_2 = _run(second, inputs)
    assert torch.equal(logits, logits_2) and torch.equal(generated, generated_2)
    assert logits.shape == (1, inputs["input_ids"].shape[1], len(build_qwen_tokenizer()))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("family", QWEN_VL_FAMILIES)
def test_save_and_reload_with_auto_classes(tmp_path, family):
    save_qwen_vl(tmp_path, family, "tiny", seed=3)
    assert (tmp_path / "model.safetensors").is_file()
    model = build_qwen_vl(family, "tiny", seed=3)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert type(loaded) is type(model)
    assert len(tokenizer) == loaded.config.text_config.vocab_size
    assert tokenizer.chat_template == build_qwen_tokenizer(family).chat_template
    inputs = _video_inputs(family, model)
    logits, generated = _run(model, inputs)
    loaded_logits, loaded_generated = _run(loaded.eval(), inputs)
    assert torch.equal(logits, loaded_logits)
    assert torch.equal(generated, loaded_generated)


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_5_vl"])
def test_processor_from_the_saved_checkpoint_feeds_the_model(tmp_path, family):
    save_qwen_vl(tmp_path, family, "tiny")
    processor = QwenVLProcessor.from_pretrained(tmp_path)
    built = build_qwen_vl_processor(family, "tiny")
    video = torch.rand(FRAMES, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))
    turn = [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Describe the motion."}]}
    ]
    text = processor.apply_chat_template(turn, add_generation_prompt=True)
    inputs = processor(text, videos=video, video_fps=8.0)
    reference = built(
        built.apply_chat_template(turn, add_generation_prompt=True), videos=video, video_fps=8.0
    )
    assert inputs.keys() == reference.keys()
    assert all(torch.equal(inputs[key], reference[key]) for key in inputs)
    model = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    grid = inputs["video_grid_thw"][0].tolist()
    assert int((inputs["input_ids"] == model.config.video_token_id).sum()) == grid[0] * grid[1] * grid[2] // 4
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(logits).all()


def test_config_ids_and_vision_constants_match_tokenizer_and_processor_settings():
    tokenizer = build_qwen_tokenizer()
    for family in QWEN_VL_FAMILIES:
        config = qwen_vl_config(family, "toy")
        settings = video_processor_settings(family, "toy")
        assert config.video_token_id == tokenizer.convert_tokens_to_ids("<|video_pad|>")
        assert config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
        assert config.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")
        assert config.vision_end_token_id == tokenizer.convert_tokens_to_ids("<|vision_end|>")
        assert config.text_config.vocab_size == len(tokenizer)
        vision = config.vision_config
        assert settings["patch_size"] == vision.patch_size
        assert settings["temporal_patch_size"] == vision.temporal_patch_size
        assert settings["merge_size"] == vision.spatial_merge_size
        rope = config.text_config.rope_parameters
        assert (
            sum(rope["mrope_section"]) * 2
            == config.text_config.hidden_size // config.text_config.num_attention_heads
        )
    assert video_processor_settings("qwen3_vl")["video_processor_type"] == "Qwen3VLVideoProcessor"
    assert video_processor_settings("qwen2_5_vl")["video_processor_type"] == "Qwen2VLVideoProcessor"


def test_sizes_grow_and_generation_stops_at_im_end():
    sizes = [qwen_vl_config("qwen3_vl", size).text_config.hidden_size for size in ("tiny", "toy", "mid")]
    assert sizes == [64, 128, 512]
    model = build_qwen_vl("qwen3_vl", "toy")
    tokenizer = build_qwen_tokenizer()
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in model.generation_config.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id


def test_unknown_family_or_size_is_a_config_error():
    with pytest.raises(ConfigError, match="family"):
        build_qwen_vl("llava")
    with pytest.raises(ConfigError, match="size"):
        qwen_vl_config("qwen3_vl", "huge")
