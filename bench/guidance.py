"""Benchmark: cost of a reward-guided step (x0 look-ahead, decode with gradients, DeScore think-free, backward).

A tiny Wan 2.1 generator, larger than the test one (8 transformer blocks of width 128 on 1x1x1 patches, so that the
transformer's activations weigh as they do in real models; an 8-channel VAE), makes 33 frames at 64x64 in 4 steps;
the last two steps are guided. Compared, side by side in one run:

- all frames: the whole clip is decoded and scored;
- first 5 frames: Wan's causal VAE decodes only the first 2 of 9 latent frames;
- checkpointing: gradient checkpointing of the transformer (the Wan VAE has none) during guided steps;
- first 5 frames + checkpointing.

Time per guided step is the median of the callback's own timing over the rounds; peak memory is the highest
allocation above the starting point during one guided run, from the torch profiler's CPU memory timeline (or, where
that is unavailable, the growth of the process's peak RSS from ``resource.getrusage``, each setting in a fresh process).

Run: ``python bench/guidance.py [--rounds 3] [--threads 1]``
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from descore.scoring import DeScore
from reward_guidance.guidance import RewardGuidanceCallback
from reward_guidance.protocol import RewardFunction, descore_reward
from toyworld.tiny_models import (
    PIPELINE_CALL_DEFAULTS,
    build_qwen_vl,
    build_qwen_vl_processor,
    build_video_pipeline,
)

PROMPT = "a red ball rolls to the left across a gray floor"
SETTINGS: dict[str, dict[str, Any]] = {
    "all frames": {},
    "first 5 frames": {"frames": 5},
    "checkpointing": {"checkpointing": True},
    "first 5 frames + checkpointing": {"frames": 5, "checkpointing": True},
}
CALL = {
    **PIPELINE_CALL_DEFAULTS["wan2.1"],
    "num_frames": 33,
    "height": 64,
    "width": 64,
    "num_inference_steps": 4,
}


def build() -> tuple[Any, RewardFunction]:
    pipe = build_video_pipeline(
        "wan2.1",
        seed=0,
        overrides={
            "vae": {"base_dim": 8},
            "transformer": {
                "num_layers": 8,
                "num_attention_heads": 4,
                "attention_head_dim": 32,
                "ffn_dim": 512,
                "patch_size": (1, 1, 1),
            },
        },
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        scorer = DeScore.from_backbone(
            build_qwen_vl("qwen3_vl", "tiny", seed=0),
            build_qwen_vl_processor("qwen3_vl", "tiny"),
            sampling={
                "fps": 8.0,
                "min_frames": 2,
                "max_frames": 16,
                "min_pixels": 32 * 32,
                "max_pixels": 64 * 64,
            },
        )
    return pipe, descore_reward(scorer, "think_free")


def guided_run(
    pipe: Any, reward: RewardFunction, options: dict[str, Any], window: tuple[int, int]
) -> list[float]:
    """One guided generation; the callback's seconds per guided step."""
    with RewardGuidanceCallback(
        reward, pipe, prompt=PROMPT, weight=0.02, normalize=True, window=window, **options
    ) as guidance:
        pipe(PROMPT, generator=torch.Generator().manual_seed(0), callback_on_step_end=guidance, **CALL)
    return [step.seconds for step in guidance.history]


def profiled_peak(pipe: Any, reward: RewardFunction, options: dict[str, Any]) -> float | None:
    """Peak bytes above the start during a run with one guided step, from the profiler's CPU memory timeline."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "timeline.json"
        try:
            with profile(
                activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True
            ) as prof:
                guided_run(pipe, reward, options, (2, 3))
            with warnings.catch_warnings():
                warnings.simplefilter(
                    "ignore", FutureWarning
                )  # deprecated in favour of the CUDA-only snapshots
                prof.export_memory_timeline(str(path), device="cpu")
            _, sizes = json.loads(path.read_text())
        except (AttributeError, RuntimeError, ValueError, OSError):
            return None
    totals = [sum(parts) for parts in sizes]
    return float(max(totals) - totals[0]) if totals else None


def rss_peak_in_fresh_process(name: str) -> float:
    """Growth of the peak RSS of a fresh process over one guided run of setting ``name`` (bytes)."""
    out = subprocess.run(
        [sys.executable, __file__, "--rss-worker", name], check=True, capture_output=True, text=True
    ).stdout
    return float(out.strip().splitlines()[-1])


def rss_worker(name: str) -> None:
    torch.set_num_threads(1)
    pipe, reward = build()
    pipe(PROMPT, generator=torch.Generator().manual_seed(0), **CALL)  # the unguided peak as the baseline
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    guided_run(pipe, reward, SETTINGS[name], (2, 3))
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="guided runs per setting (2 guided steps each)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--rss-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_worker:
        rss_worker(args.rss_worker)
        return
    torch.set_num_threads(args.threads)
    pipe, reward = build()
    guided_run(pipe, reward, {}, (3, 4))  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for _ in range(args.rounds):
        for name, options in SETTINGS.items():
            seconds[name] += guided_run(pipe, reward, options, (2, 4))
    peaks = {name: profiled_peak(pipe, reward, options) for name, options in SETTINGS.items()}
    source = "torch profiler CPU memory timeline"
    if any(peak is None for peak in peaks.values()):
        peaks = {name: rss_peak_in_fresh_process(name) for name in SETTINGS}
        source = "peak RSS growth, fresh process each"

    print(
        f"reward-guided steps, tiny Wan 2.1 (8 blocks, 8-channel VAE), {CALL['num_frames']} frames "
        f"{CALL['height']}x{CALL['width']}, DeScore think-free, {args.rounds} rounds x 2 guided steps"
    )
    print(f"peak memory: {source}")
    base_time = statistics.median(seconds["all frames"])
    base_peak = peaks["all frames"]
    print(f"{'':34s}{'s / step':>10s}{'peak MB':>10s}{'time':>9s}{'memory':>9s}")
    for name in SETTINGS:
        step = statistics.median(seconds[name])
        print(
            f"{name:34s}{step:10.3f}{peaks[name] / 1e6:10.1f}{step / base_time:8.2f}x{peaks[name] / base_peak:8.2f}x"
        )
    print("(ratios relative to 'all frames')")


if __name__ == "__main__":
    main()
