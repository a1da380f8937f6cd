"""Benchmark the toy world: build a 1000-pair dataset (render + write mp4 + pair files), and analyzer throughput.

1. ``build``: wall time of :func:`toyworld.dataset.build_dataset` for ``--pairs`` pairs (default 1000, two videos
   per prompt, so 2000 mp4 files), with the share spent rendering. Goal: under 60 s on 2 cores.
2. ``analyze``: videos per second of :func:`toyworld.analyzer.analyze` on rendered frames and on decoded mp4 files.

Run: ``python bench/toyworld_build.py [--pairs 1000] [--analyze 200] [--json FILE]``
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from descore.video_io import read_video
from toyworld import dataset as dataset_module
from toyworld.analyzer import analyze
from toyworld.dataset import build_dataset, load_manifest
from toyworld.render import render


def bench_build(pairs: int, seed: int, folder: Path) -> dict[str, float]:
    """Build a dataset and time it, counting the time spent inside the renderer separately."""
    spent = {"render": 0.0}
    original = dataset_module.render

    def timed_render(*args, **kwargs):
        start = time.perf_counter()
        result = original(*args, **kwargs)
        spent["render"] += time.perf_counter() - start
        return result

    dataset_module.render = timed_render
    try:
        start = time.perf_counter()
        summary = build_dataset(folder, pairs, seed, progress=False)
        total = time.perf_counter() - start
    finally:
        dataset_module.render = original
    return {
        "pairs": float(sum(summary.pairs.values())),
        "videos": float(summary.videos),
        "seconds": total,
        "render_seconds": spent["render"],
        "seconds_per_1000_pairs": total * 1000 / sum(summary.pairs.values()),
    }


def bench_analyze(folder: Path, count: int) -> dict[str, float]:
    """Analyzer throughput on the first ``count`` videos of the built dataset, raw renders and decoded mp4."""
    records = load_manifest(folder)[:count]
    frames = render([r["shown"] for r in records])
    start = time.perf_counter()
    for video, record in zip(frames, records):
        analyze(video, record["prompt"])
    raw = time.perf_counter() - start
    start = time.perf_counter()
    for record in records:
        analyze(read_video(folder / record["path"]).frames, record["prompt"])
    decoded = time.perf_counter() - start
    return {
        "videos": float(len(records)),
        "raw_videos_per_second": len(records) / raw,
        "mp4_videos_per_second": len(records) / decoded,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--analyze", type=int, default=200, help="videos for the analyzer timing (0: skip)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    args = parser.parse_args()
    results: dict[str, object] = {"cpus": os.cpu_count(), "numpy": np.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "toy"
        results["build"] = bench_build(args.pairs, args.seed, folder)
        if args.analyze:
            results["analyze"] = bench_analyze(folder, args.analyze)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
