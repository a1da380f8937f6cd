"""Benchmark: sampling a video at 2 fps by seeking vs decoding every frame and subsampling.

Writes a 20 s, 256x256, 24 fps mp4 with ``descore.video_io.write_video`` (moving shapes over a drifting gradient,
with some noise so the encoder has real work) into a temporary folder, then reads it with
``read_video(fps=2, strategy="seek")`` and ``read_video(fps=2, strategy="sequential")``, alternating the two for
several rounds, and prints the best and the median time of each and their ratios (the best-of-N ratio is the
headline: on a shared machine the median also measures the neighbours). Both must return the same frames.

Run: ``python bench/video_io.py [--rounds 7] [--fps 2] [--threads 1]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from descore.video_io import read_video, write_video

SECONDS, SIZE, SOURCE_FPS = 20, 256, 24


def make_clip(path: Path) -> Path:
    """A synthetic clip: a gradient that drifts, two moving squares, mild noise."""
    rng = np.random.default_rng(0)
    count = SECONDS * SOURCE_FPS
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    frames = np.empty((count, SIZE, SIZE, 3), np.uint8)
    for k in range(count):
        frame = np.stack([(xx + 2 * k) % 256, (yy + k) % 256, np.full_like(xx, 128)], axis=-1).astype(
            np.float32
        )
        x0, y0 = (5 * k) % (SIZE - 48), (3 * k) % (SIZE - 48)
        frame[y0 : y0 + 48, x0 : x0 + 48] = (255, 40, 40)
        x1 = SIZE - 32 - (4 * k) % (SIZE - 32)
        frame[100:132, x1 : x1 + 32] = (30, 30, 220)
        frame += rng.normal(0, 4, frame.shape)
        frames[k] = frame.clip(0, 255).astype(np.uint8)
    return write_video(frames, path, fps=SOURCE_FPS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed reads of each kind (median reported)")
    parser.add_argument("--fps", type=float, default=2.0, help="sampling rate")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for the uint8 -> float conversion"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        clip = make_clip(Path(folder) / "clip.mp4")
        print(
            f"wrote {clip.name}: {SECONDS} s, {SIZE}x{SIZE}, {SOURCE_FPS} fps, "
            f"{clip.stat().st_size / 1e6:.2f} MB in {time.perf_counter() - start:.1f} s"
        )

        seek = read_video(clip, fps=args.fps, strategy="seek")  # warm-up, and the reference result
        straight = read_video(clip, fps=args.fps, strategy="sequential")
        assert torch.equal(seek.frames, straight.frames), "seeking and sequential decoding disagree"
        assert torch.equal(seek.frame_indices, straight.frame_indices)

        times: dict[str, list[float]] = {"seek": [], "sequential": []}
        for _ in range(args.rounds):
            for strategy, runs in times.items():
                start = time.perf_counter()
                read_video(clip, fps=args.fps, strategy=strategy)
                runs.append(time.perf_counter() - start)

    print(
        f"sampled {seek.num_frames} of {SECONDS * SOURCE_FPS} frames at {args.fps:g} fps "
        f"(indices {seek.frame_indices[:4].tolist()} ...), {args.rounds} rounds each, alternating"
    )
    print(f"{'':32s}{'best':>9s}{'median':>10s}")
    for label, key in (
        ("decode every frame, subsample", "sequential"),
        ("seek to the sampled frames", "seek"),
    ):
        print(f"{label:32s}{min(times[key]) * 1000:7.1f}ms{statistics.median(times[key]) * 1000:8.1f}ms")
    best = min(times["sequential"]) / min(times["seek"])
    median = statistics.median(times["sequential"]) / statistics.median(times["seek"])
    print(f"{'ratio (sequential / seek)':32s}{best:8.2f}x{median:9.2f}x   (goal >= 3x)")


if __name__ == "__main__":
    main()
