"""Scoring cost on CPU with a mid-sized random-init Qwen3-VL (compute dominates Python overhead).

Measured side by side in one run:
1. think-then-score with KV reuse vs the reference approach (generate, then a second full forward over
   prompt + video + CoT + query token), at two CoT lengths, against generating the CoT alone;
2. batched vs one-by-one scoring of 8 candidates, think-free and think;
3. think-free vs think cost per video.

    python bench/scoring.py [--size mid] [--cot-lengths 64 256] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from descore.scoring import DeScore
from toyworld.tiny_models import build_qwen_vl, build_qwen_vl_processor


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="mid", help="toyworld Qwen3-VL size (tiny, toy, mid)")
    parser.add_argument("--cot-lengths", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    scorer = DeScore.from_backbone(
        build_qwen_vl("qwen3_vl", args.size, seed=0),
        build_qwen_vl_processor("qwen3_vl", args.size),
        sampling={
            "fps": 2.0,
            "min_frames": 2,
            "max_frames": 8,
            "min_pixels": 64 * 64,
            "max_pixels": 128 * 128,
        },
    )
    g = torch.Generator().manual_seed(0)
    videos = [torch.rand(8, 3, 128, 128, generator=g) for _ in range(args.candidates)]
    prompt = "a red circle moving left on a gray background, static camera"
    params = sum(p.numel() for p in scorer.model.parameters()) / 1e6
    scorer.score(
        videos[:2], [prompt] * 2, think=True, generation={"max_new_tokens": 8}, progress=False
    )  # warm-up
    print(
        f"Qwen3-VL size={args.size} ({params:.1f}M parameters), 8 frames 128x128 per video, {args.threads} threads"
    )

    print(
        f"\n1. think-then-score, one video: cost of reading the score after the CoT (seconds, best of {args.repeats})"
    )
    print("   generate = writing the CoT; KV step = query token on the generation's cache (ours);")
    print("   re-prefill = the reference's second full forward over video + prompt + CoT + query token")
    print(
        f"{'CoT':>5} {'generate':>9} {'KV step':>8} {'re-prefill':>11} {'KV extra':>9} {'ref extra':>10} {'ref/KV':>7}"
    )
    settings = scorer.config.sampling
    for length in args.cot_lengths:
        t_gen = t_kv = t_ref = float("inf")
        for _ in range(args.repeats):
            with torch.inference_mode():
                items, _ = scorer._prepare(videos[:1], [prompt], [None], [None], settings, dedupe=True)
                inputs = scorer._encode(items, settings)
                start = time.perf_counter()
                out = scorer.model.backbone.generate(
                    **inputs,
                    do_sample=False,
                    repetition_penalty=1.05,
                    max_new_tokens=length,
                    min_new_tokens=length,
                    pad_token_id=scorer.tokenizer.pad_token_id,
                    return_dict_in_generate=True,
                )
                t_gen = min(t_gen, time.perf_counter() - start)
                generated = out.sequences[:, inputs["input_ids"].shape[1] :]
                mask = torch.ones_like(generated, dtype=torch.bool)
                start = time.perf_counter()
                kv_reward = scorer.score_from_cache(inputs, out.sequences, mask, out.cache)
                t_kv = min(t_kv, time.perf_counter() - start)
                items[0].cot_ids = generated[0].tolist()
                start = time.perf_counter()
                ref_reward = scorer._score_full(items, settings)
                t_ref = min(t_ref, time.perf_counter() - start)
            assert torch.allclose(kv_reward, ref_reward, atol=1e-4), (kv_reward, ref_reward)
        print(
            f"{length:>5} {t_gen:>9.3f} {t_kv:>8.4f} {t_ref:>11.3f} {100 * t_kv / t_gen:>8.2f}% "
            f"{100 * t_ref / t_gen:>9.1f}% {t_ref / t_kv:>7.1f}"
        )

    n = args.candidates
    print(f"\n2. {n} candidates: batched vs one-by-one (seconds, best of {args.repeats})")
    gen = {"max_new_tokens": 32, "min_new_tokens": 32}
    prompts = [prompt] * n
    for label, kwargs in (
        ("think-free", {"think": False}),
        ("think (CoT 32)", {"think": True, "generation": gen}),
    ):
        t_batched = timed(
            lambda kw=kwargs: scorer.score(videos, prompts, batch_size=n, progress=False, **kw), args.repeats
        )
        t_single = timed(
            lambda kw=kwargs: scorer.score(videos, prompts, batch_size=1, progress=False, **kw), args.repeats
        )
        print(
            f"   {label:<15} batched {t_batched:7.3f}  one-by-one {t_single:7.3f}  speedup {t_single / t_batched:5.2f}x"
        )

    print("\n3. cost per video, batched")
    t_free = (
        timed(lambda: scorer.score(videos, prompts, batch_size=n, think=False, progress=False), args.repeats)
        / n
    )
    for length in args.cot_lengths:
        g2 = {"max_new_tokens": length, "min_new_tokens": length}
        t_think = (
            timed(
                lambda g=g2: scorer.score(
                    videos, prompts, batch_size=n, think=True, generation=g, progress=False
                ),
                1,
            )
            / n
        )
        print(
            f"   think-free {t_free:.3f} s/video, think (CoT {length}) {t_think:.3f} s/video: ratio {t_think / t_free:.1f}x"
        )


if __name__ == "__main__":
    main()
