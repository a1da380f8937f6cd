"""Benchmark: seconds per stage-1 (cold-start) step and per stage-2 (dual-RL) step on tiny Qwen3-VL backbones.

Writes a small pair file of synthetic mp4 clips (a coloured square on a gray background, one video of each pair with
noise and flicker) with CoTs into a temporary folder, then runs :class:`descore.training.ColdStartTrainer` for
``--steps`` optimizer steps from a freshly built backbone of each ``--sizes`` entry (``toy``: the size that learns the
toy world, ``mid``: 37M parameters) and reports the median step time after ``--warmup`` steps, the tokens per step
(padded batch tokens that carry attention) and tokens per second. Decoding and the final export are not timed.

Stage 2 (``--stage2-steps``, 0 to skip): :class:`descore.training.dual_rl.DualRLTrainer` from the same fresh backbone on a small
toy-world pair file (brief CoTs, ground-truth sub-scores), ``--stage2-pairs`` pairs per step, G = ``--group-size``
rollouts of ``--max-new-tokens`` tokens per video; reported: median seconds per step split into rollout (generation
and rewards) and update (log-probs of the old and reference policy, GRPO + BT backward, optimizer), and generated
tokens per second of the rollout. A random backbone never stops early, so every rollout has the full length.

Run: ``python bench/train_step.py [--sizes toy mid] [--steps 8] [--batch-size 4] [--threads 1]``
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from descore.scoring import DeScore
from descore.training import ColdStartConfig, ColdStartTrainer
from descore.training.dual_rl import DualRLConfig, DualRLTrainer
from descore.video_io import write_video

FRAME_SIDE = {"toy": 64, "mid": 128}


def sampling_settings(side: int) -> dict[str, float]:
    """The judge's sampling in both benchmarks: 4 fps, 2-8 frames, at most ``side`` x ``side`` pixels."""
    return {"fps": 4.0, "min_frames": 2, "max_frames": 8, "min_pixels": 32 * 32, "max_pixels": side * side}


def make_pairs(folder: Path, count: int, side: int) -> Path:
    """``count`` pairs of 8-frame clips at 4 fps, ``side`` x ``side`` pixels, with CoT_A / CoT_B."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(count):
        paths = []
        for tag, noisy in (("clean", False), ("noisy", True)):
            frames = np.full((8, side, side, 3), rng.uniform(0.35, 0.6), np.float32)
            x = int(rng.integers(0, side // 2))
            for t in range(8):
                frames[t, side // 4 : side // 2, x + t : x + t + side // 4] = (0.9, 0.1, 0.1)
                if noisy:
                    frames[t] += rng.normal(0, 0.18, frames[t].shape) + (0.25 if t % 2 else -0.1)
            path = write_video((frames.clip(0, 1) * 255).astype(np.uint8), folder / f"{i}_{tag}.mp4", fps=4.0)
            paths.append(path.name)
        cot = "The video shows a red square on a gray background. The frames are {}."
        rows.append(
            {
                "path_A": paths[0],
                "path_B": paths[1],
                "prompt": "a red square moving on a gray background",
                "Overall": "A",
                "CoT_A": cot.format("clean and steady"),
                "CoT_B": cot.format("noisy and they flicker"),
            }
        )
    out = folder / "pairs.csv"
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def common_fields(args: argparse.Namespace) -> dict:
    """Config fields both stages are timed with."""
    return {
        "lora_r": args.lora_r,
        "lora_alpha": 2.0 * args.lora_r,
        "learning_rate": 1e-4,
        "mixed_precision": args.mixed_precision,
        "gradient_checkpointing": args.gradient_checkpointing,
        "save_every": 0,
        "progress": False,
    }


def run(size: str, pairs: Path, out: Path, args: argparse.Namespace) -> dict[str, float]:
    from toyworld.tiny_models import build_qwen_vl, build_qwen_vl_processor

    torch.manual_seed(0)
    side = FRAME_SIDE[size]
    sampling = sampling_settings(side)
    backbone = build_qwen_vl("qwen3_vl", size, seed=0)
    scorer = DeScore.from_backbone(backbone, build_qwen_vl_processor("qwen3_vl", size), sampling=sampling)
    config = ColdStartConfig(
        train_file=str(pairs),
        output_dir=str(out),
        batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        max_steps=args.warmup + args.steps,
        cot_mask_prob=args.cot_mask_prob,
        **common_fields(args),
    )
    history = ColdStartTrainer(config, scorer).train().history[args.warmup :]
    seconds = statistics.median(h["seconds"] for h in history)
    tokens = statistics.median(h["tokens"] for h in history)
    params = sum(p.numel() for p in scorer.model.parameters())
    return {
        "params_M": params / 1e6,
        "s_per_step": seconds,
        "tokens_per_step": tokens,
        "tokens_per_s": tokens / seconds,
    }


def run_stage2(size: str, out: Path, args: argparse.Namespace) -> dict[str, float]:
    from toyworld.dataset import build_dataset
    from toyworld.scene import WorldConfig
    from toyworld.tiny_models import build_qwen_vl, build_qwen_vl_processor

    side = FRAME_SIDE[size]
    world = WorldConfig(num_frames=8, height=side, width=side, fps=4)
    pairs = build_dataset(
        out / "data",
        4 * args.stage2_pairs,
        seed=0,
        config=world,
        cot_style="brief",
        split_fractions=(1.0, 0.0, 0.0),
        progress=False,
    ).pair_files["train"]
    sampling = sampling_settings(side)
    torch.manual_seed(0)
    scorer = DeScore.from_backbone(
        build_qwen_vl("qwen3_vl", size, seed=0), build_qwen_vl_processor("qwen3_vl", size), sampling=sampling
    )
    config = DualRLConfig(
        train_file=str(pairs),
        output_dir=str(out / "run"),
        dimension="Overall",
        group_size=args.group_size,
        pairs_per_step=args.stage2_pairs,
        rollout_batch_size=2 * args.stage2_pairs * args.group_size,
        micro_batch_pairs=args.stage2_pairs,
        mini_batches=1,
        max_new_tokens=args.max_new_tokens,
        length_thresholds=[16.0, 32.0, 48.0, 64.0],
        max_steps=args.warmup + args.stage2_steps,
        **common_fields(args),
    )
    history = DualRLTrainer(config, scorer).train().history[args.warmup :]
    seconds = statistics.median(h["seconds"] for h in history)
    rollout = statistics.median(h["rollout_seconds"] for h in history)
    rollouts = 2 * args.stage2_pairs * args.group_size
    tokens = statistics.median(h["cot_tokens"] for h in history) * rollouts
    return {
        "s_per_step": seconds,
        "rollout_s": rollout,
        "update_s": seconds - rollout,
        "gen_tokens_per_s": tokens / rollout,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["toy", "mid"], choices=sorted(FRAME_SIDE))
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per step (two sequences each)")
    parser.add_argument("--lora-r", type=int, default=16, help="LoRA rank")
    parser.add_argument("--cot-mask-prob", type=float, default=0.5)
    parser.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--stage2-steps", type=int, default=4, help="timed stage-2 steps (0: skip stage 2)")
    parser.add_argument("--stage2-pairs", type=int, default=2, help="stage-2 pairs per step")
    parser.add_argument("--group-size", type=int, default=4, help="stage-2 rollouts per video (G)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="stage-2 rollout length")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        print(f"batch {args.batch_size} pairs/step, cot_mask_prob {args.cot_mask_prob}, {args.threads} thread(s), "
              f"mixed precision {args.mixed_precision}, device {'cuda' if torch.cuda.is_available() else 'cpu'}")  # fmt: skip
        print(f"{'size':<6}{'params (M)':>12}{'s/step':>10}{'tokens/step':>14}{'tokens/s':>12}")
        for size in args.sizes:
            data = root / size
            data.mkdir()
            pairs = make_pairs(data, max(args.batch_size, 8), FRAME_SIDE[size])
            result = run(size, pairs, root / f"out_{size}", args)
            print(
                f"{size:<6}{result['params_M']:>12.2f}{result['s_per_step']:>10.3f}"
                f"{result['tokens_per_step']:>14.0f}{result['tokens_per_s']:>12.0f}"
            )
        if args.stage2_steps:
            rollouts = 2 * args.stage2_pairs * args.group_size
            print(f"\nstage 2: {args.stage2_pairs} pairs/step, G = {args.group_size} ({rollouts} rollouts of "
                  f"{args.max_new_tokens} tokens)")  # fmt: skip
            print(f"{'size':<6}{'s/step':>10}{'rollout s':>11}{'update s':>10}{'gen tokens/s':>14}")
            for size in args.sizes:
                result = run_stage2(size, root / f"stage2_{size}", args)
                print(
                    f"{size:<6}{result['s_per_step']:>10.3f}{result['rollout_s']:>11.3f}{result['update_s']:>10.3f}"
                    f"{result['gen_tokens_per_s']:>14.0f}"
                )


if __name__ == "__main__":
    main()
