"""Stage-1 cold start on tiny real Qwen3-VL backbones: learning, exact resume, bad data, LoRA export."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from descore.video_io import write_video

COLOURS = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.8, 0.2), "blue": (0.15, 0.2, 0.9), "yellow": (0.9, 0.85, 0.1)}
TOY_SAMPLING = {"fps": 4.0, "min_frames": 2, "max_frames": 8, "min_pixels": 32 * 32, "max_pixels": 64 * 64}


def toy_clip(rng: np.random.Generator, colour: str, defective: bool) -> np.ndarray:
    """8 frames of 64x64: a coloured square moving on a gray background; the defect is heavy noise plus flicker
    (a whole-frame statistic a tiny vision tower picks up quickly)."""
    frames = np.empty((8, 64, 64, 3), np.float32)
    background = rng.uniform(0.35, 0.6)
    x, y, dx = rng.integers(4, 36), rng.integers(4, 36), rng.choice([-2, 2])
    for t in range(8):
        frame = np.full((64, 64, 3), background, np.float32)
        left = int(np.clip(x + dx * t, 0, 44))
        frame[y : y + 20, left : left + 20] = COLOURS[colour]
        if defective:
            frame += rng.normal(0, 0.18, frame.shape) + (0.25 if t % 2 else -0.1)
        frames[t] = frame
    return (frames.clip(0, 1) * 255).round().astype(np.uint8)


def cot_text(colour: str, defective: bool) -> str:
    quality = "noisy and they flicker" if defective else "clean and steady"
    return f"The video shows a {colour} square on a gray background. The frames are {quality}."


def write_toy_pairs(folder: Path, name: str, num_pairs: int, seed: int, num_ties: int = 0) -> Path:
    """A DeScore-format pair file: each pair is the same scene once clean and once defective (label: the clean one),
    plus ``num_ties`` pairs of two clean takes (label: same). Videos are written as mp4 next to the file."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(num_pairs + num_ties):
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        tie = i >= num_pairs
        clean_first = bool(rng.integers(2))
        flags = (False, False) if tie else ((False, True) if clean_first else (True, False))
        paths, cots = [], []
        for side, defective in zip("AB", flags):
            path = folder / "videos" / f"{name}_{i:04d}_{side}.mp4"
            write_video(toy_clip(rng, colour, defective), path, fps=4.0)
            paths.append(f"videos/{path.name}")
            cots.append(cot_text(colour, defective))
        rows.append(
            {
                "path_A": paths[0],
                "path_B": paths[1],
                "prompt": f"a {colour} square moving on a gray background",
                "Overall": "same" if tie else ("A" if clean_first else "B"),
                "CoT_A": cots[0],
                "CoT_B": cots[1],
            }
        )
    out = folder / f"{name}.csv"
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def tiny_scorer(seed: int = 0, size: str = "tiny"):
    from descore.scoring import DeScore
    from toyworld.tiny_models import build_qwen_vl, build_qwen_vl_processor

    torch.manual_seed(seed)
    return DeScore.from_backbone(
        build_qwen_vl("qwen3_vl", size, seed=seed), build_qwen_vl_processor("qwen3_vl", size), sampling=TOY_SAMPLING
    )
