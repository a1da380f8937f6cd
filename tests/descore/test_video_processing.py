"""descore.video_processing against the official Qwen-VL video processors.

Parity is proven twice: against golden outputs of the official processors committed in
tests/fixtures/processor_goldens (regenerate with scripts/make_processor_goldens.py; always run), and live against
the official processors when torchvision imports (skipped otherwise).
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
    smart_resize as official_qwen2_smart_resize,
)
from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize as official_qwen3_smart_resize

from descore.errors import ConfigError, PreprocessingError
from descore.video_processing import (
    QwenVideoProcessor,
    num_llm_tokens,
    pad_temporal,
    patchify,
    smart_resize,
    temporal_patch_timestamps,
)
from toyworld.tiny_models import video_processor_settings

GOLDENS = Path(__file__).resolve().parents[1] / "fixtures" / "processor_goldens"
HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None
needs_torchvision = pytest.mark.skipif(
    not HAS_TORCHVISION, reason="official video processors need torchvision"
)
ATOL = 1e-5


@functools.cache
def golden_tensors() -> dict[str, torch.Tensor]:
    return load_file(str(GOLDENS / "goldens.safetensors"))


@functools.cache
def golden_manifest() -> dict[str, Any]:
    return json.loads((GOLDENS / "goldens.json").read_text())


def golden_cases() -> list[dict[str, Any]]:
    return golden_manifest()["cases"]


def golden_frames(case: dict[str, Any]) -> list[torch.Tensor]:
    """The case's uint8 input frames (T, C, H, W), exactly as fed to the official processor."""
    return [golden_tensors()[video["frames"]] for video in case["videos"]]


def golden_folder(case: dict[str, Any]) -> Path:
    """The official processor folder of a case (Qwen2-VL cases share the Qwen2.5-VL folder)."""
    return GOLDENS / ("qwen2_5_vl" if case["processor"] == "qwen2_vl" else case["processor"])


CASE_IDS = [case["name"] for case in golden_cases()]


def smooth_frames(num_frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(num_frames, 3, height, width, generator=generator)


# ---------------------------------------------------------------------------------------------------- goldens
@pytest.mark.parametrize("case", golden_cases(), ids=CASE_IDS)
def test_uint8_frames_match_official_goldens(case: dict[str, Any]) -> None:
    processor = QwenVideoProcessor.from_dict(case["video_processor"])
    out = processor(golden_frames(case))
    expected = golden_tensors()[f"{case['name']}/pixel_values_videos"]
    assert torch.equal(out["video_grid_thw"], golden_tensors()[f"{case['name']}/video_grid_thw"])
    assert out["pixel_values_videos"].dtype == torch.float32
    assert out["pixel_values_videos"].shape == expected.shape
    torch.testing.assert_close(out["pixel_values_videos"], expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("case", golden_cases(), ids=CASE_IDS)
def test_quantized_float_frames_match_official_uint8_goldens_and_keep_gradients(case: dict[str, Any]) -> None:
    processor = QwenVideoProcessor.from_dict(case["video_processor"])
    frames = [(f.float() / 255).requires_grad_() for f in golden_frames(case)]
    pixels = processor(frames, quantize=True)["pixel_values_videos"]
    torch.testing.assert_close(
        pixels, golden_tensors()[f"{case['name']}/pixel_values_videos"], rtol=0, atol=ATOL
    )
    pixels.square().sum().backward()
    for f in frames:
        assert torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0


@pytest.mark.parametrize("case", [c for c in golden_cases() if c["has_float"]], ids=lambda c: c["name"])
def test_float_frames_match_official_float_goldens(case: dict[str, Any]) -> None:
    processor = QwenVideoProcessor.from_dict(case["video_processor"])
    out = processor([f.float() / 255 for f in golden_frames(case)])
    expected = golden_tensors()[f"{case['name']}/pixel_values_videos_float"]
    torch.testing.assert_close(out["pixel_values_videos"], expected, rtol=0, atol=ATOL)


def test_float_and_uint8_paths_differ_only_by_rounding_of_the_resize() -> None:
    """The documented difference: the official uint8 resize rounds (and clamps between passes)."""
    case = next(c for c in golden_cases() if c["name"] == "q3_t3_shrink")
    processor = QwenVideoProcessor.from_dict(case["video_processor"])
    frames = golden_frames(case)
    exact = processor(frames)["pixel_values_videos"]
    smooth = processor([f.float() / 255 for f in frames])["pixel_values_videos"]
    gap = (exact - smooth).abs().max().item()
    assert 0 < gap < 0.2  # a few 8-bit levels after normalisation by std 0.5
    # no resize: both paths are the same affine map of the same values
    no_resize = QwenVideoProcessor(family="qwen3_vl", min_pixels=32 * 32 * 2, max_pixels=32 * 32 * 4)
    level_frames = (smooth_frames(2, 32, 32) * 255).round().to(torch.uint8)
    torch.testing.assert_close(
        no_resize(level_frames)["pixel_values_videos"],
        no_resize(level_frames.float() / 255)["pixel_values_videos"],
        rtol=0,
        atol=ATOL,
    )


@pytest.mark.parametrize("case", golden_cases(), ids=CASE_IDS)
def test_config_round_trips_the_official_dict(case: dict[str, Any]) -> None:
    official = case["video_processor"]
    ours = QwenVideoProcessor.from_dict(official)
    assert ours.to_dict() == official
    assert ours.family == (
        "qwen3_vl" if official["video_processor_type"] == "Qwen3VLVideoProcessor" else "qwen2_vl"
    )


# ---------------------------------------------------------------------------------------------------- smart resize
def test_smart_resize_matches_official_functions_on_a_sweep() -> None:
    sides = (7, 20, 31, 45, 64, 100, 257, 480, 1080)
    budgets = ((28 * 28, 28 * 28 * 4), (56 * 56, 28 * 28 * 1280), (4096, 32 * 32 * 64), (100352, 602112))
    checked = raised = 0
    for height, width in itertools.product(sides, repeat=2):
        for (min_pixels, max_pixels), factor in itertools.product(budgets, (28, 32)):
            for num_frames in (None, 2, 3, 5, 8):
                ours = functools.partial(
                    smart_resize, height, width, factor, min_pixels, max_pixels, num_frames=num_frames
                )
                try:
                    if num_frames is None:
                        official = official_qwen2_smart_resize(height, width, factor, min_pixels, max_pixels)
                    else:
                        official = official_qwen3_smart_resize(
                            num_frames, height, width, 2, factor, min_pixels, max_pixels
                        )
                except ValueError:
                    with pytest.raises(PreprocessingError, match="aspect ratio"):
                        ours()
                    continue
                if _official_breaks_budget(
                    official, num_frames, height, width, factor, min_pixels, max_pixels
                ):
                    with pytest.raises(PreprocessingError, match="max_pixels"):
                        ours()
                    raised += 1
                    continue
                assert ours() == official
                checked += 1
    assert checked > 2000 and raised > 10


def _official_breaks_budget(
    official: tuple[int, int],
    num_frames: int | None,
    height: int,
    width: int,
    factor: int,
    low: int,
    high: int,
) -> bool:
    """Whether the official function had to resize and then exceeded max_pixels (it silently does; we raise)."""
    frames = num_frames or 1
    if num_frames is not None and (height < factor or width < factor):
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    t_bar = frames if num_frames is None else round(num_frames / 2) * 2
    rounded = t_bar * round(height / factor) * factor * round(width / factor) * factor
    return not low <= rounded <= high and min(frames, t_bar) * official[0] * official[1] > high


def test_a_per_frame_budget_holds_for_odd_frame_counts() -> None:
    # 9 frames round to 8 in Qwen3-VL's comparisons: a per-frame budget of exactly 128x128 is met, not refused
    processor = QwenVideoProcessor.from_dict(video_processor_settings("qwen3_vl", "tiny"))
    for frames in (8, 9):
        videos = [torch.rand(frames, 3, 48, 48)]
        out = processor(videos, min_pixels=128 * 128, max_pixels=128 * 128, per_frame=True)
        assert out["video_grid_thw"].tolist() == [[frames // 2 + frames % 2, 8, 8]]


def test_smart_resize_known_values() -> None:
    # a 1080p frame under Qwen2.5-VL's default per-frame budget, and under Qwen3-VL's default video budget
    assert smart_resize(1080, 1920, 28, 3136, 12845056) == (1092, 1932)
    assert smart_resize(1080, 1920, 32, 4096, 25165824, num_frames=32) == (640, 1152)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {
                "height": 64,
                "width": 64,
                "factor": 32,
                "min_pixels": 1024,
                "max_pixels": 2048,
                "num_frames": 9,
            },
            "max_pixels",
        ),
        ({"height": 28, "width": 600, "factor": 28, "min_pixels": 784, "max_pixels": 1568}, "max_pixels"),
        (
            {
                "height": 64,
                "width": 64,
                "factor": 32,
                "min_pixels": 1024,
                "max_pixels": 4096,
                "num_frames": 1,
            },
            "too short",
        ),
        ({"height": 10, "width": 2100, "factor": 28, "min_pixels": 784, "max_pixels": 10**8}, "aspect ratio"),
        ({"height": 64, "width": 64, "factor": 32, "min_pixels": 8192, "max_pixels": 4096}, "min_pixels"),
        ({"height": 0, "width": 64, "factor": 32, "min_pixels": 1024, "max_pixels": 4096}, "empty"),
        ({"height": 32, "width": 32, "factor": 32, "min_pixels": 9000, "max_pixels": 9100}, "cannot be met"),
        (
            {
                "height": 20,
                "width": 30,
                "factor": 32,
                "min_pixels": 4097,
                "max_pixels": 4097,
                "num_frames": 2,
            },
            "64x64",
        ),
    ],
)
def test_smart_resize_errors_name_the_problem(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(PreprocessingError, match=match):
        smart_resize(**kwargs)


# ---------------------------------------------------------------------------------------------------- gradients
def test_gradient_is_the_exact_adjoint_of_the_linear_pipeline() -> None:
    """Resize, normalise and patchify are affine in the frames: check the gradient against a finite difference."""
    processor = QwenVideoProcessor(family="qwen2_vl", min_pixels=28 * 28, max_pixels=56 * 56)
    frames = smooth_frames(3, 45, 61, seed=1).double().requires_grad_()
    weights = torch.randn(
        processor(frames.detach())["pixel_values_videos"].shape, generator=torch.Generator().manual_seed(2)
    )
    objective = (processor(frames)["pixel_values_videos"] * weights).sum()
    (grad,) = torch.autograd.grad(objective, frames)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    direction = smooth_frames(3, 45, 61, seed=3).double() * 1e-2
    with torch.no_grad():
        moved = (processor(frames + direction)["pixel_values_videos"] * weights).sum() - objective
    torch.testing.assert_close(moved.double(), (grad * direction).sum(), rtol=1e-4, atol=1e-4)


def test_gradient_reaches_every_frame_including_the_padded_last_one() -> None:
    processor = QwenVideoProcessor(family="qwen3_vl", min_pixels=1024, max_pixels=32 * 32 * 16)
    frames = smooth_frames(5, 40, 40).requires_grad_()
    processor(frames)["pixel_values_videos"].sum().backward()
    per_frame = frames.grad.abs().sum(dim=(1, 2, 3))
    assert (per_frame > 0).all()
    # the last frame is used twice (temporal padding to 6 frames), so it receives twice the gradient
    torch.testing.assert_close(per_frame[-1], 2 * per_frame[0], rtol=1e-4, atol=0)


# ---------------------------------------------------------------------------------------------------- pieces
def test_patchify_order_and_temporal_padding() -> None:
    frames = torch.arange(3 * 3 * 4 * 4, dtype=torch.float32).reshape(3, 3, 4, 4)
    padded = pad_temporal(frames, 2)
    assert padded.shape[0] == 4 and torch.equal(padded[3], frames[2])
    patches, grid = patchify(frames, patch_size=2, merge_size=1, temporal_patch_size=2)
    assert grid == (2, 2, 2)
    assert patches.shape == (8, 3 * 2 * 2 * 2)
    # first patch: channel 0, frames 0 and 1, top-left 2x2 block, in (C, T, p, p) order
    expected = torch.stack([frames[0, 0, :2, :2], frames[1, 0, :2, :2]]).flatten()
    torch.testing.assert_close(patches[0, :8], expected)
    with pytest.raises(PreprocessingError, match="multiple"):
        patchify(frames[:, :, :3], patch_size=2, merge_size=1, temporal_patch_size=2)


def test_timestamps_and_token_counts() -> None:
    assert temporal_patch_timestamps([0.0, 0.5, 1.0, 1.5, 2.0], 2) == [0.25, 1.25, 2.0]
    assert num_llm_tokens((3, 4, 6), merge_size=2) == 18
    processor = QwenVideoProcessor(family="qwen3_vl", min_pixels=1024, max_pixels=32 * 32 * 8 * 4)
    assert processor.grid_thw(5, 48, 64) == (3, 4, 4)
    assert processor.num_video_tokens(5, 48, 64) == 12
    assert processor(smooth_frames(5, 48, 64))["video_grid_thw"].tolist() == [[3, 4, 4]]
    with pytest.raises(PreprocessingError, match="empty"):
        temporal_patch_timestamps([], 2)


def test_budget_override_and_grey_frames() -> None:
    processor = QwenVideoProcessor(family="qwen2_vl", min_pixels=784, max_pixels=784 * 4)
    grey = smooth_frames(2, 56, 56)[:, :1]
    out = processor(grey, max_pixels=784)
    assert out["video_grid_thw"].tolist() == [[1, 2, 2]]
    torch.testing.assert_close(
        out["pixel_values_videos"],
        processor(grey.expand(-1, 3, -1, -1), max_pixels=784)["pixel_values_videos"],
    )
    assert processor.max_pixels == 784 * 4


# ---------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("frames", "match"),
    [
        (torch.rand(4, 32, 32, 3), "channels"),
        (torch.rand(3, 32, 32), r"\(T, C, H, W\)"),
        (torch.rand(1, 4, 3, 32, 32), r"\(T, C, H, W\)"),
        (torch.rand(4, 3, 32, 32) * 255, r"\[0, 1\]"),
        (torch.full((4, 3, 32, 32), float("nan")), r"\[0, 1\]"),
        (torch.zeros(4, 3, 32, 32, dtype=torch.int32), "dtype"),
        (torch.rand(1, 3, 64, 64), "too short"),
        (torch.rand(9, 3, 64, 64), "max_pixels"),
    ],
)
def test_bad_frames_raise_preprocessing_errors(frames: torch.Tensor, match: str) -> None:
    processor = QwenVideoProcessor(family="qwen3_vl", min_pixels=1024, max_pixels=2048)
    with pytest.raises(PreprocessingError, match=match):
        processor([frames])


def test_bad_video_lists_raise() -> None:
    processor = QwenVideoProcessor()
    with pytest.raises(PreprocessingError, match="non-empty list"):
        processor([])
    with pytest.raises(PreprocessingError, match="torch.Tensor"):
        processor([[0.0]])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"family": "llava"}, "family"),
        ({"min_pixels": 10, "max_pixels": 5}, "shortest_edge"),
        ({"resample": 1}, "LANCZOS"),
        ({"image_std": (0.5, 0.0, 0.5)}, "std"),
        ({"patch_size": 0}, "patch_size"),
    ],
)
def test_bad_config_raises_config_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        QwenVideoProcessor(**kwargs)


# ---------------------------------------------------------------------------------------------------- config files
def test_loads_the_official_v5_folder_and_the_hub_layouts(tmp_path: Path) -> None:
    official = QwenVideoProcessor.from_pretrained(GOLDENS / "qwen3_vl")
    nested = json.loads((GOLDENS / "qwen3_vl" / "processor_config.json").read_text())["video_processor"]
    assert official.to_dict() == nested and official.family == "qwen3_vl"

    # video_preprocessor_config.json as shipped with Qwen3-VL checkpoints
    hub = tmp_path / "qwen3"
    hub.mkdir()
    (hub / "video_preprocessor_config.json").write_text(
        json.dumps(
            {
                "size": {"longest_edge": 25165824, "shortest_edge": 4096},
                "patch_size": 16,
                "temporal_patch_size": 2,
                "merge_size": 2,
                "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5, 0.5, 0.5],
                "processor_class": "Qwen3VLProcessor",
                "video_processor_type": "Qwen3VLVideoProcessor",
            }
        )
    )
    qwen3 = QwenVideoProcessor.from_pretrained(hub)
    assert (qwen3.family, qwen3.patch_size, qwen3.min_pixels, qwen3.max_pixels) == (
        "qwen3_vl",
        16,
        4096,
        25165824,
    )

    # legacy Qwen2.5-VL: only preprocessor_config.json with min_pixels / max_pixels
    legacy = tmp_path / "qwen25"
    legacy.mkdir()
    (legacy / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "min_pixels": 3136,
                "max_pixels": 12845056,
                "patch_size": 14,
                "temporal_patch_size": 2,
                "merge_size": 2,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
                "image_processor_type": "Qwen2VLImageProcessor",
                "processor_class": "Qwen2_5_VLProcessor",
            }
        )
    )
    qwen25 = QwenVideoProcessor.from_pretrained(legacy)
    assert (qwen25.family, qwen25.patch_size, qwen25.min_pixels, qwen25.max_pixels) == (
        "qwen2_vl",
        14,
        3136,
        12845056,
    )

    saved = qwen25.save_pretrained(tmp_path / "saved")
    assert saved.name == "video_preprocessor_config.json"
    assert QwenVideoProcessor.from_pretrained(tmp_path / "saved") == qwen25


def test_bad_config_files_raise(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no video processor config"):
        QwenVideoProcessor.from_pretrained(tmp_path)
    (tmp_path / "video_preprocessor_config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="video_preprocessor_config.json"):
        QwenVideoProcessor.from_pretrained(tmp_path)
    (tmp_path / "video_preprocessor_config.json").write_text(
        json.dumps({"video_processor_type": "LlavaVideo"})
    )
    with pytest.raises(ConfigError, match="family"):
        QwenVideoProcessor.from_pretrained(tmp_path)


# ---------------------------------------------------------------------------------------------------- live parity
LIVE_SHAPES = [
    ("qwen3_vl", 3, 50, 70, (1024, 32 * 32 * 12)),
    ("qwen3_vl", 6, 64, 48, (1024, 32 * 32 * 6)),
    ("qwen3_vl", 5, 30, 90, (8192, 32 * 32 * 64)),
    ("qwen2_vl", 5, 47, 61, (784, 28 * 28 * 4)),
    ("qwen2_vl", 4, 90, 20, (784, 28 * 28 * 4)),
]


@needs_torchvision
@pytest.mark.parametrize(("family", "num_frames", "height", "width", "size"), LIVE_SHAPES)
def test_live_parity_with_official_video_processors(
    family: str, num_frames: int, height: int, width: int, size: tuple[int, int]
) -> None:
    from transformers import Qwen2VLVideoProcessor, Qwen3VLVideoProcessor

    official_cls = Qwen3VLVideoProcessor if family == "qwen3_vl" else Qwen2VLVideoProcessor
    official = official_cls(
        size={"shortest_edge": size[0], "longest_edge": size[1]}, cap_pixels_per_frame=False
    )
    ours = QwenVideoProcessor.from_dict(official.to_dict())
    frames = smooth_frames(num_frames, height, width, seed=num_frames)
    uint8 = (frames * 255).round().to(torch.uint8)
    expected = official([uint8.numpy().transpose(0, 2, 3, 1)], do_sample_frames=False, return_tensors="pt")
    got = ours(uint8)
    assert torch.equal(got["video_grid_thw"], expected["video_grid_thw"])
    torch.testing.assert_close(got["pixel_values_videos"], expected["pixel_values_videos"], rtol=0, atol=ATOL)
    expected_float = official([frames], do_sample_frames=False, do_rescale=False, return_tensors="pt")
    torch.testing.assert_close(
        ours(frames)["pixel_values_videos"], expected_float["pixel_values_videos"], rtol=0, atol=ATOL
    )
    assert ours.to_dict() == json.loads(official.to_json_string())
