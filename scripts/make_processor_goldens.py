"""Regenerate tests/fixtures/processor_goldens/ with the OFFICIAL transformers Qwen-VL processors.

The official video processors need torchvision, which does not import next to the project's CPU torch, so this runs
in a separate environment (offline, no hub):

    python3 -m venv .venv-vision
    .venv-vision/bin/pip install torch==2.14.1 torchvision==0.29.1
    .venv-vision/bin/pip install transformers==5.24.0 safetensors numpy pillow tokenizers
    PYTHONPATH=. .venv-vision/bin/python scripts/make_processor_goldens.py

It writes, for Qwen3-VL and Qwen2.5-VL, a processor folder saved by the official processor (tokenizer
from ``toyworld.tiny_models.build_qwen_tokenizer`` + official configs), and for each case (frame sizes, odd frame
counts, fps, pixel budgets, the per-frame cap, batches) the uint8 input frames, the frame metadata and the official
outputs: ``pixel_values_videos`` for uint8 input (and for float input on some cases), ``video_grid_thw``,
``input_ids``, ``attention_mask``, ``mm_token_type_ids`` and, for Qwen2.5-VL, ``second_per_grid_ts``.
tests/descore/test_video_processing.py and test_processing.py compare descore against them.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
import transformers
from safetensors.torch import save_file
from transformers import (
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)
from transformers.video_utils import VideoMetadata

from toyworld.tiny_models.tokenizer import build_qwen_tokenizer

logger = logging.getLogger("make_processor_goldens")

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "processor_goldens"
PROCESSORS = {
    "qwen3_vl": (Qwen3VLProcessor, Qwen3VLVideoProcessor, 16, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "qwen2_5_vl": (Qwen2_5_VLProcessor, Qwen2VLVideoProcessor, 14, None, None),
    "qwen2_vl": (Qwen2VLProcessor, Qwen2VLVideoProcessor, 14, None, None),
}
# Processor folders written (Qwen2-VL differs from Qwen2.5-VL only in the processor class: it reuses that folder).
FOLDERS = ("qwen3_vl", "qwen2_5_vl")
PROMPT = "Rate the physical realism of the motion."

# Each video: (frames, height, width, source fps, source frame count, stride). Frames are sampled from a source
# video of `source frames` at `source fps` with the given index stride, as descore.video_io would sample them.
# Budgets are (shortest_edge, longest_edge); Qwen3-VL counts all frames, Qwen2-VL one frame. Sizes are chosen so that
# every smart-resize branch is hit while grids stay small (the fixture must stay well under 2 MB).
CASES: list[dict[str, Any]] = [
    # Qwen3-VL: odd count, budget met exactly by rounding (40 x 56 -> 32 x 64, grid 3 x 2 x 4), 24 fps source
    {
        "name": "q3_t5_fps24",
        "processor": "qwen3_vl",
        "size": (1024, 8192),
        "videos": [(5, 40, 56, 24.0, 24, 5)],
    },
    # Qwen3-VL: budget-limited shrink (80 x 64 -> 32 x 32), 3 frames, 10 fps source; float input too
    {
        "name": "q3_t3_shrink",
        "processor": "qwen3_vl",
        "size": (1024, 4096),
        "float": True,
        "videos": [(3, 80, 64, 10.0, 12, 4)],
    },
    # Qwen3-VL: frame smaller than one block (20 x 50) -> upscale, then the min-pixels enlarge branch; float too
    {
        "name": "q3_t2_enlarge",
        "processor": "qwen3_vl",
        "size": (4097, 65536),
        "float": True,
        "videos": [(2, 20, 50, 8.0, 2, 1)],
    },
    # Qwen3-VL: per-frame cap (cap_pixels_per_frame=True), 7 frames
    {
        "name": "q3_t7_cap",
        "processor": "qwen3_vl",
        "size": (1024, 14336),
        "cap": True,
        "videos": [(7, 48, 48, 30.0, 70, 10)],
    },
    # Qwen3-VL: 9 frames of odd size, 30 fps source
    {
        "name": "q3_t9_fps30",
        "processor": "qwen3_vl",
        "size": (1024, 18432),
        "videos": [(9, 33, 47, 30.0, 27, 3)],
    },
    # Qwen3-VL: two texts, two videos in the first and none in the second, left padding
    {
        "name": "q3_batch",
        "processor": "qwen3_vl",
        "size": (1024, 8192),
        "texts": [2, 0],
        "videos": [(2, 32, 32, 25.0, 30, 15), (3, 45, 34, 12.5, 40, 13)],
    },
    # Qwen2.5-VL: odd count, per-frame budget met exactly (40 x 56 -> 28 x 56), 30 fps source
    {"name": "q25_t5", "processor": "qwen2_5_vl", "size": (784, 1568), "videos": [(5, 40, 56, 30.0, 60, 12)]},
    # Qwen2.5-VL: budget-limited shrink (64 x 60 -> 28 x 28); float input too
    {
        "name": "q25_t3_shrink",
        "processor": "qwen2_5_vl",
        "size": (784, 1568),
        "float": True,
        "videos": [(3, 64, 60, 24.0, 9, 3)],
    },
    # Qwen2.5-VL: min-pixels enlarge (24 x 30 -> 56 x 56); float input too
    {
        "name": "q25_t2_enlarge",
        "processor": "qwen2_5_vl",
        "size": (1568, 12544),
        "float": True,
        "videos": [(2, 24, 30, 2.0, 2, 1)],
    },
    # Qwen2.5-VL: per-frame cap with a small max_video_tokens, 7 frames
    {
        "name": "q25_t7_cap",
        "processor": "qwen2_5_vl",
        "size": (784, 12544),
        "cap": True,
        "max_video_tokens": 4,
        "videos": [(7, 56, 56, 15.0, 21, 3)],
    },
    # Qwen2.5-VL: batch of two texts with one video each, different fps
    {
        "name": "q25_batch",
        "processor": "qwen2_5_vl",
        "size": (784, 1568),
        "texts": [1, 1],
        "videos": [(2, 28, 28, 6.0, 6, 3), (4, 30, 40, 20.0, 40, 10)],
    },
    # Qwen2-VL (the Qwen2.5-VL folder, Qwen2VLProcessor): no second_per_grid_ts, no timestamps
    {"name": "q2_t3", "processor": "qwen2_vl", "size": (784, 1568), "videos": [(3, 36, 36, 24.0, 3, 1)]},
]


def make_frames(num_frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """Deterministic uint8 frames (T, H, W, 3): smooth moving gradients plus integer-hash texture (high frequencies
    exercise the resize's rounding and clamping)."""
    t, y, x, c = np.meshgrid(
        np.arange(num_frames), np.arange(height), np.arange(width), np.arange(3), indexing="ij"
    )
    smooth = (x * 255 // max(width - 1, 1) + y * 97 // max(height - 1, 1) + 23 * t + 60 * c + 11 * seed) % 256
    mixed = (x * 73856093) ^ (y * 19349663) ^ ((t + 7 * seed) * 83492791) ^ (c * 2654435761)
    texture = (mixed % 251) - 125
    return np.clip(smooth + texture // 2, 0, 255).astype(np.uint8)


def build_processor(kind: str, out_dir: Path) -> Any:
    """The official processor of ``kind``, saved into ``out_dir / kind`` (the folder the tests load)."""
    processor_cls, video_cls, patch, mean, std = PROCESSORS[kind]
    extra = {} if mean is None else {"image_mean": list(mean), "image_std": list(std)}
    tokenizer = build_qwen_tokenizer(kind)
    processor = processor_cls(
        image_processor=Qwen2VLImageProcessor(patch_size=patch, **extra),
        tokenizer=tokenizer,
        video_processor=video_cls(patch_size=patch, **extra),
        chat_template=tokenizer.chat_template,
    )
    target = out_dir / kind
    if target.exists():
        shutil.rmtree(target)
    processor.save_pretrained(target)
    return processor


def as_qwen2_vl(base: Any) -> Any:
    """A Qwen2VLProcessor sharing the Qwen2.5-VL folder's tokenizer and processors."""
    return Qwen2VLProcessor(
        image_processor=base.image_processor,
        tokenizer=base.tokenizer,
        video_processor=base.video_processor,
        chat_template=base.chat_template,
    )


def run_case(case: dict[str, Any], base: Any, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    name, kind = case["name"], case["processor"]
    processor_cls, video_cls, patch, mean, std = PROCESSORS[kind]
    shortest, longest = case["size"]
    video_kwargs: dict[str, Any] = {
        "patch_size": patch,
        "size": {"shortest_edge": shortest, "longest_edge": longest},
        "cap_pixels_per_frame": case.get("cap", False),
    }
    if mean is not None:
        video_kwargs.update(image_mean=list(mean), image_std=list(std))
    if "max_video_tokens" in case:
        video_kwargs["max_video_tokens"] = case["max_video_tokens"]
    video_processor = video_cls(**video_kwargs)
    processor = processor_cls(
        image_processor=base.image_processor,
        tokenizer=base.tokenizer,
        video_processor=video_processor,
        chat_template=base.chat_template,
    )

    videos, metadata, records = [], [], []
    for index, (frames, height, width, fps, total, stride) in enumerate(case["videos"]):
        array = make_frames(frames, height, width, seed=len(tensors) + index)
        indices = [i * stride for i in range(frames)]
        md = VideoMetadata(
            total_num_frames=total, fps=fps, frames_indices=indices, height=height, width=width
        )
        key = f"{name}/frames{index}"
        tensors[key] = torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()
        videos.append(array)
        metadata.append(md)
        records.append(
            {
                "frames": key,
                "source_fps": fps,
                "source_num_frames": total,
                "frames_indices": indices,
                "timestamps": md.timestamps,
                "sampled_fps": md.sampled_fps,
            }
        )

    counts = case.get("texts", [1])
    texts = []
    for count in counts:
        content = [{"type": "video"}] * count + [
            {"type": "text", "text": PROMPT if count else "No video here."}
        ]
        texts.append(
            base.tokenizer.apply_chat_template(
                [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
            )
        )
    call = {"do_sample_frames": False, "padding": True, "padding_side": "left", "return_tensors": "pt"}
    out = processor(text=texts, videos=videos, video_metadata=metadata, **call)
    for key in ("pixel_values_videos", "video_grid_thw", "input_ids", "attention_mask", "mm_token_type_ids"):
        tensors[f"{name}/{key}"] = out[key].contiguous()
    if "second_per_grid_ts" in out:
        tensors[f"{name}/second_per_grid_ts"] = torch.as_tensor(
            out["second_per_grid_ts"], dtype=torch.float32
        )
    if case.get("float"):
        float_videos = [torch.from_numpy(v).permute(0, 3, 1, 2).float() / 255 for v in videos]
        float_out = video_processor(
            float_videos, video_metadata=metadata, do_sample_frames=False, do_rescale=False
        )
        tensors[f"{name}/pixel_values_videos_float"] = float_out["pixel_values_videos"].contiguous()
    logger.info("%s: grids %s, %d tokens", name, out["video_grid_thw"].tolist(), out["input_ids"].shape[1])
    return {
        "name": name,
        "processor": kind,
        "video_processor": video_processor.to_dict(),
        "texts": texts,
        "videos": records,
        "has_float": bool(case.get("float")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="fixture folder (default: %(default)s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    bases = {kind: build_processor(kind, args.out) for kind in FOLDERS}
    bases["qwen2_vl"] = as_qwen2_vl(bases["qwen2_5_vl"])
    tensors: dict[str, torch.Tensor] = {}
    cases = [run_case(case, bases[case["processor"]], tensors) for case in CASES]
    save_file(tensors, str(args.out / "goldens.safetensors"))
    manifest = {
        "generated_by": "scripts/make_processor_goldens.py",
        "versions": {
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "transformers": transformers.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        },
        "cases": cases,
    }
    (args.out / "goldens.json").write_text(json.dumps(manifest, indent=1) + "\n")
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    logger.info("wrote %d cases to %s (%.0f kB)", len(cases), args.out, size / 1024)


if __name__ == "__main__":
    main()
