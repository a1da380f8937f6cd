"""How stable is the analyzer's verdict on the toy generator's samples, and what does that leave for best-of-N?

The toy analyzer (``toyworld.analyzer.analyze``) is the ground truth of the toy-world checks: best-of-8 by DeScore
against a random pick (issue 6) and the recipes' true quality (issue 7). Generator samples sit near its thresholds
(flicker, jitter, shape overlap), so imperceptible changes can move their sub-scores. For ``--prompts`` fresh toy
prompts with ``--candidates`` samples each, the raw decoded frames (what best-of-N and the recipes score) are
analysed, and again after

- an mp4 round trip (H.264, yuv420p, as ``toyworld.dataset`` writes rendered videos),
- a lossless mp4 round trip (``write_video(..., lossless=True)``, as it writes generator samples: 8-bit frames), and
- a one-pixel horizontal shift of every frame (wrapping around).

Printed: the correlation, mean absolute difference and share of identical overall scores against the raw verdict,
per-dimension agreement, and a best-of-N ceiling: the raw score of the candidate a judge would pick if it were the
analyzer itself, reading the perturbed video, against a random pick and the best candidate. Also printed: what
lossless storage costs against the default mp4, in write time and file size (ratios measured side by side).

Run: ``python bench/analyzer_stability.py [--prompts 60] [--candidates 4] [--seed 3]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from descore.answer import DIMENSIONS
from descore.video_io import write_video
from toyworld.analyzer import analyze
from toyworld.dataset import ENCODER_OPTIONS
from toyworld.generator import TOY_GENERATOR_CALL, WORLD, load_toy_generator, toy_prompts


def sample(prompts: list[str], candidates: int, seed: int) -> torch.Tensor:
    """(P, K, F, C, H, W) raw frames in [0, 1]: ``candidates`` samples of each prompt, seeded per candidate."""
    pipe = load_toy_generator()
    pipe.set_progress_bar_config(disable=True)
    videos = []
    for p, prompt in enumerate(prompts):
        generators = [
            torch.Generator().manual_seed(seed * 10**6 + p * candidates + k) for k in range(candidates)
        ]
        with torch.no_grad():
            frames = pipe(
                [prompt] * candidates, **TOY_GENERATOR_CALL, generator=generators, output_type="pt"
            ).frames
        videos.append(frames.float().clamp(0, 1))
    return torch.stack(videos)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=60)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.prompts < 1 or args.candidates < 2:
        parser.error("need --prompts >= 1 and --candidates >= 2")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    prompts = toy_prompts(args.prompts, seed=args.seed)
    videos = sample(prompts, args.candidates, args.seed)
    verdicts: dict[str, list] = {"raw": [], "mp4": [], "lossless mp4": [], "shift 1 px": []}
    write_seconds = {"mp4": 0.0, "lossless mp4": 0.0}
    write_bytes = {"mp4": 0, "lossless mp4": 0}
    with tempfile.TemporaryDirectory() as folder:
        for p, prompt in enumerate(prompts):
            for k, video in enumerate(videos[p]):
                verdicts["raw"].append(analyze(video, prompt))
                for name, lossless in (("mp4", False), ("lossless mp4", True)):
                    tick = time.perf_counter()
                    path = write_video(
                        video,
                        Path(folder) / f"{p}_{k}_{lossless}.mp4",
                        fps=float(WORLD.fps),
                        options=ENCODER_OPTIONS,
                        lossless=lossless,
                    )
                    write_seconds[name] += time.perf_counter() - tick
                    write_bytes[name] += path.stat().st_size
                    verdicts[name].append(analyze(path, prompt))
                verdicts["shift 1 px"].append(analyze(torch.roll(video, shifts=1, dims=-1), prompt))
    raw = np.array([a.overall for a in verdicts["raw"]]).reshape(args.prompts, args.candidates)
    print(
        f"{args.prompts} prompts x {args.candidates} samples of the shipped toy generator, analyzer overall 1-5"
    )
    print(
        f"{'perturbation':<13} {'corr':>6} {'mean |diff|':>12} {'identical':>10}  "
        + " ".join(f"{d:>11}" for d in DIMENSIONS)
    )
    ceilings = {}
    for name in ("mp4", "lossless mp4", "shift 1 px"):
        other = np.array([a.overall for a in verdicts[name]]).reshape(raw.shape)
        agree = [
            np.mean([a.subscores[d] == b.subscores[d] for a, b in zip(verdicts["raw"], verdicts[name])])
            for d in DIMENSIONS
        ]
        print(
            f"{name:<13} {np.corrcoef(raw.ravel(), other.ravel())[0, 1]:>6.3f} {np.abs(raw - other).mean():>12.3f} "
            f"{np.mean(raw == other):>10.3f}  " + " ".join(f"{x:>11.3f}" for x in agree)
        )
        # overall scores tie often: break ties at random (seeded), not towards the first candidate
        jitter = np.random.default_rng(args.seed).uniform(0.0, 1e-6, other.shape)
        ceilings[name] = raw[np.arange(args.prompts), (other + jitter).argmax(axis=1)].mean()
    print(
        f"\nbest-of-{args.candidates} by the analyzer itself reading a perturbed copy (raw score of its pick):"
    )
    for name, value in ceilings.items():
        print(f"  judge reads {name:<13} {value:.3f}")
    print(f"  random pick               {raw.mean():.3f}")
    print(f"  best candidate            {raw.max(axis=1).mean():.3f}")
    print(
        f"\nlossless vs mp4 storage: write time x{write_seconds['lossless mp4'] / write_seconds['mp4']:.2f}, "
        f"file size x{write_bytes['lossless mp4'] / write_bytes['mp4']:.2f} "
        f"({write_bytes['lossless mp4'] / len(verdicts['raw']) / 1024:.1f} KiB per clip)"
    )
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
