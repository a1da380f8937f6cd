"""descore.processing.QwenVLProcessor against the official Qwen3-VL / Qwen2.5-VL / Qwen2-VL processors.

Token expansion (input_ids, attention_mask, mm_token_type_ids, second_per_grid_ts) is compared with the committed
goldens of the official processors (always) and live when torchvision imports.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from descore.errors import CheckpointError, ConfigError, PreprocessingError
from descore.processing import QwenVLProcessor
from descore.video_processing import QwenVideoProcessor
from tests.descore.test_video_processing import (
    ATOL,
    CASE_IDS,
    GOLDENS,
    golden_cases,
    golden_folder,
    golden_frames,
    golden_tensors,
    needs_torchvision,
    smooth_frames,
)


@functools.cache
def folder_processor(folder: Path) -> QwenVLProcessor:
    return QwenVLProcessor.from_pretrained(folder)


def case_processor(case: dict[str, Any]) -> QwenVLProcessor:
    """The official folder's tokenizer with the case's video processor, as the official call was configured."""
    base = folder_processor(golden_folder(case))
    video_processor = QwenVideoProcessor.from_dict(case["video_processor"])
    return QwenVLProcessor(
        base.tokenizer, video_processor, variant=case["processor"], chat_template=base.chat_template
    )


def call_case(case: dict[str, Any], frames: list[torch.Tensor], **kwargs: Any) -> Any:
    return case_processor(case)(
        case["texts"],
        frames,
        video_timestamps=[video["timestamps"] for video in case["videos"]],
        video_fps=[video["sampled_fps"] for video in case["videos"]],
        **kwargs,
    )


@pytest.mark.parametrize("case", golden_cases(), ids=CASE_IDS)
def test_processor_outputs_match_official_goldens(case: dict[str, Any]) -> None:
    out = call_case(case, golden_frames(case))
    expected = {
        key[len(case["name"]) + 1 :]: value
        for key, value in golden_tensors().items()
        if key.startswith(case["name"] + "/")
    }
    for key in ("input_ids", "attention_mask", "mm_token_type_ids", "video_grid_thw"):
        assert torch.equal(out[key], expected[key]), key
    torch.testing.assert_close(out["pixel_values_videos"], expected["pixel_values_videos"], rtol=0, atol=ATOL)
    if case["processor"] == "qwen2_5_vl":
        torch.testing.assert_close(out["second_per_grid_ts"], expected["second_per_grid_ts"])
    else:
        assert "second_per_grid_ts" not in out and "second_per_grid_ts" not in expected
    assert set(out) == {
        "input_ids",
        "attention_mask",
        "mm_token_type_ids",
        "pixel_values_videos",
        "video_grid_thw",
    } | ({"second_per_grid_ts"} if case["processor"] == "qwen2_5_vl" else set())


def test_qwen3_expansion_is_timestamped_groups_per_temporal_patch() -> None:
    processor = folder_processor(GOLDENS / "qwen3_vl")
    vp = QwenVideoProcessor.from_dict(
        {**processor.video_processor.to_dict(), "size": {"shortest_edge": 1024, "longest_edge": 32 * 32 * 8}}
    )
    processor = QwenVLProcessor(processor.tokenizer, vp, chat_template=processor.chat_template)
    out = processor("<|video_pad|>", smooth_frames(5, 32, 32), video_timestamps=[[0.0, 0.4, 0.8, 1.2, 1.6]])
    text = processor.tokenizer.decode(out["input_ids"][0])
    group = "<|vision_start|>" + "<|video_pad|>" + "<|vision_end|>"
    assert text == f"<0.2 seconds>{group}<1.0 seconds>{group}<1.6 seconds>{group}"
    assert out["mm_token_type_ids"][0].tolist().count(2) == 3
    # fps instead of timestamps: frame i at i / fps
    by_fps = processor("<|video_pad|>", smooth_frames(5, 32, 32), video_fps=2.5)
    assert torch.equal(by_fps["input_ids"], out["input_ids"])


def test_qwen25_one_group_and_second_per_grid_ts_from_timestamps() -> None:
    processor = folder_processor(GOLDENS / "qwen2_5_vl")
    out = processor(
        "a<|video_pad|>b",
        smooth_frames(4, 56, 56),
        video_timestamps=[[0.0, 0.25, 0.5, 0.75]],
        min_pixels=784,
        max_pixels=56 * 56,
    )
    grid = out["video_grid_thw"][0].tolist()
    assert grid == [2, 4, 4]
    ids = out["input_ids"][0]
    assert int((ids == processor.video_token_id).sum()) == 8
    assert processor.video_processor.with_budget(784, 56 * 56).num_video_tokens(4, 56, 56) == 8
    torch.testing.assert_close(out["second_per_grid_ts"], torch.tensor([0.5]))


def test_default_fps_is_24_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    processor = folder_processor(GOLDENS / "qwen2_5_vl")
    with caplog.at_level(logging.WARNING, logger="descore.processing"):
        out = processor("<|video_pad|>", smooth_frames(2, 28, 28))
    assert "24 fps" in caplog.text
    torch.testing.assert_close(out["second_per_grid_ts"], torch.tensor([2 / 24]))
    # unknown timestamps (NaN, as descore.video_io gives for sources without a frame rate) count as missing
    qwen3 = folder_processor(GOLDENS / "qwen3_vl")
    frames = smooth_frames(4, 32, 32)
    unknown = qwen3(
        "<|video_pad|>", frames, video_timestamps=[torch.full((4,), float("nan"))], min_pixels=1024
    )
    at_24 = qwen3("<|video_pad|>", frames, video_fps=24.0, min_pixels=1024)
    assert torch.equal(unknown["input_ids"], at_24["input_ids"])


def test_left_padding_by_default_and_right_on_request() -> None:
    processor = folder_processor(GOLDENS / "qwen3_vl")
    left = processor(["short", "a much longer text than the other one"])
    assert left["attention_mask"][0, 0] == 0 and left["attention_mask"][0, -1] == 1
    right = processor(["short", "a much longer text than the other one"], padding_side="right")
    assert right["attention_mask"][0, 0] == 1 and right["attention_mask"][0, -1] == 0
    assert "pixel_values_videos" not in left


def test_gradients_flow_from_processor_outputs_to_frames() -> None:
    case = next(c for c in golden_cases() if c["name"] == "q3_t5_fps24")
    frames = [(f.float() / 255).requires_grad_() for f in golden_frames(case)]
    out = call_case(case, frames)
    assert out["pixel_values_videos"].requires_grad
    out["pixel_values_videos"].pow(2).mean().backward()
    assert torch.isfinite(frames[0].grad).all() and frames[0].grad.abs().sum() > 0


def test_save_and_reload_round_trip(tmp_path: Path) -> None:
    case = next(c for c in golden_cases() if c["name"] == "q25_t7_cap")
    processor = case_processor(case)
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["processor_class"] == "Qwen2_5_VLProcessor"
    assert config["video_processor"] == case["video_processor"]
    assert config["image_processor"]["image_processor_type"] == "Qwen2VLImageProcessor"
    assert (tmp_path / "tokenizer.json").is_file() and (tmp_path / "chat_template.jinja").is_file()
    reloaded = QwenVLProcessor.from_pretrained(tmp_path)
    assert reloaded.variant == "qwen2_5_vl" and reloaded.chat_template == processor.chat_template
    assert reloaded.video_processor == processor.video_processor
    frames = golden_frames(case)
    kwargs = {"video_timestamps": [v["timestamps"] for v in case["videos"]]}
    first, second = processor(case["texts"], frames, **kwargs), reloaded(case["texts"], frames, **kwargs)
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_loads_a_hub_layout_checkpoint_folder(tmp_path: Path) -> None:
    """Real Qwen3-VL folders: tokenizer files + video_preprocessor_config.json + preprocessor_config.json."""
    base = folder_processor(GOLDENS / "qwen3_vl")
    base.tokenizer.save_pretrained(tmp_path)
    (tmp_path / "video_preprocessor_config.json").write_text(
        json.dumps({**base.video_processor.to_dict(), "processor_class": "Qwen3VLProcessor"})
    )
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "Qwen2VLImageProcessorFast",
                "patch_size": 16,
                "processor_class": "Qwen3VLProcessor",
            }
        )
    )
    loaded = QwenVLProcessor.from_pretrained(tmp_path)
    assert loaded.variant == "qwen3_vl" and loaded.video_processor == base.video_processor
    assert loaded.image_processor_config == {
        "image_processor_type": "Qwen2VLImageProcessorFast",
        "patch_size": 16,
    }


def test_apply_chat_template_renders_one_placeholder_per_video() -> None:
    processor = folder_processor(GOLDENS / "qwen3_vl")
    conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Rate it."}]}]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True)
    assert text == case_text("q3_t5_fps24").replace("Rate the physical realism of the motion.", "Rate it.")
    assert text.count("<|video_pad|>") == 1


def case_text(name: str) -> str:
    return next(c for c in golden_cases() if c["name"] == name)["texts"][0]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        ({"text": "no placeholder", "videos": [smooth_frames(2, 32, 32)]}, "1 video"),
        ({"text": "<|video_pad|><|video_pad|>", "videos": [smooth_frames(2, 32, 32)]}, "2 <|video_pad|>"),
        ({"text": "<|image_pad|>"}, "images are not supported"),
        (
            {"text": "<|video_pad|>", "videos": [smooth_frames(3, 32, 32)], "video_timestamps": [[0.0, 1.0]]},
            "2 timestamps for 3 frames",
        ),
        (
            {"text": "<|video_pad|>", "videos": [smooth_frames(2, 32, 32)], "video_timestamps": [[1.0, 0.5]]},
            "increasing",
        ),
        (
            {
                "text": "<|video_pad|>",
                "videos": [smooth_frames(2, 32, 32)],
                "video_timestamps": [[0.0, float("nan")]],
            },
            "finite",
        ),
        ({"text": "<|video_pad|>", "videos": [smooth_frames(2, 32, 32)], "video_fps": 0.0}, "positive"),
        (
            {"text": "<|video_pad|>", "videos": [smooth_frames(2, 32, 32)], "video_fps": [1.0, 2.0]},
            "2 entries",
        ),
        ({"text": "<|video_pad|>", "videos": [torch.rand(2, 32, 32, 3)]}, "channels"),
        (
            {
                "text": "<|video_pad|> long text",
                "videos": [smooth_frames(2, 32, 32)],
                "truncation": True,
                "max_length": 3,
            },
            "truncation",
        ),
        ({"text": "x", "return_tensors": "np"}, "return_tensors"),
        ({"text": []}, "non-empty"),
        ({"text": "<|video_pad|>", "videos": [smooth_frames(2, 32, 32)], "max_pixels": 10}, "min_pixels"),
    ],
)
def test_bad_calls_raise_preprocessing_errors(call: dict[str, Any], match: str) -> None:
    processor = folder_processor(GOLDENS / "qwen3_vl")
    with pytest.raises(PreprocessingError, match=match):
        processor(**call)


def test_bad_construction_raises(tmp_path: Path) -> None:
    base = folder_processor(GOLDENS / "qwen3_vl")
    with pytest.raises(ConfigError, match="needs a 'qwen2_vl' video processor"):
        QwenVLProcessor(base.tokenizer, base.video_processor, variant="qwen2_5_vl")
    with pytest.raises(ConfigError, match="variant"):
        QwenVLProcessor(base.tokenizer, base.video_processor, variant="llava")
    with pytest.raises(CheckpointError, match="not a directory"):
        QwenVLProcessor.from_pretrained(tmp_path / "missing")
    QwenVideoProcessor().save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="tokenizer"):
        QwenVLProcessor.from_pretrained(tmp_path)


# ---------------------------------------------------------------------------------------------------- live parity
@needs_torchvision
@pytest.mark.parametrize("folder", ["qwen3_vl", "qwen2_5_vl"])
def test_live_official_processor_loads_our_folder_and_agrees(folder: str, tmp_path: Path) -> None:
    from transformers import AutoProcessor
    from transformers.video_utils import VideoMetadata

    ours = folder_processor(GOLDENS / folder)
    vp = QwenVideoProcessor.from_dict(
        {**ours.video_processor.to_dict(), "size": {"shortest_edge": 784, "longest_edge": 32 * 32 * 12}}
    )
    ours = QwenVLProcessor(ours.tokenizer, vp, variant=ours.variant, chat_template=ours.chat_template)
    ours.save_pretrained(tmp_path)
    official = AutoProcessor.from_pretrained(tmp_path)
    assert (
        type(official).__name__
        == {"qwen3_vl": "Qwen3VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor"}[folder]
    )

    videos = [
        (smooth_frames(n, h, w, seed=n) * 255).round().to(torch.uint8)
        for n, h, w in ((3, 41, 59), (6, 64, 36))
    ]
    fps, stride, total = 12.0, 4, 40
    metadata = [
        VideoMetadata(total_num_frames=total, fps=fps, frames_indices=[i * stride for i in range(len(v))])
        for v in videos
    ]
    texts = ["<|video_pad|> first", "second <|video_pad|> and more text"]
    expected = official(
        text=list(texts),
        videos=[v.numpy().transpose(0, 2, 3, 1) for v in videos],
        video_metadata=metadata,
        do_sample_frames=False,
        cap_pixels_per_frame=False,
        padding=True,
        padding_side="left",
        return_tensors="pt",
    )
    got = ours(
        texts,
        videos,
        video_timestamps=[m.timestamps for m in metadata],
        video_fps=[m.sampled_fps for m in metadata],
    )
    for key in ("input_ids", "attention_mask", "mm_token_type_ids", "video_grid_thw"):
        assert torch.equal(got[key], torch.as_tensor(expected[key])), key
    torch.testing.assert_close(got["pixel_values_videos"], expected["pixel_values_videos"], rtol=0, atol=ATOL)
    if folder == "qwen2_5_vl":
        torch.testing.assert_close(
            got["second_per_grid_ts"], torch.as_tensor(expected["second_per_grid_ts"], dtype=torch.float32)
        )
