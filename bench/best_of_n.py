"""Benchmark: best-of-8 reranking on a tiny Wan 2.1 pipeline with a tiny random DeScore.

1. Batched vs sequential: ``best_of_n(..., batch_size=8)`` (one pipeline call with 8 generators, one scoring call)
   against ``batch_size=1``, alternating for several rounds; both must pick the same candidate with the same rewards.
2. Cascade vs full think: the 8 candidates of several prompts/seed sets scored by DeScore with its chain of thought
   (think) and by the cascade (think-free for all 8, think for the top 2): scoring wall time ratio, and how often the
   cascade picks the full think winner. The tiny DeScore is random, so its think-free and think rankings are only
   loosely related; with a trained checkpoint the agreement is what to watch.

Run: ``python bench/best_of_n.py [--rounds 3] [--trials 8] [--cot-tokens 48] [--think-batch 1] [--threads 1]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from descore.scoring import DeScore
from reward_guidance.best_of_n import best_of_n
from reward_guidance.protocol import CascadeReward, DeScoreReward, descore_reward
from toyworld.tiny_models import (
    PIPELINE_CALL_DEFAULTS,
    build_qwen_vl,
    build_qwen_vl_processor,
    build_video_pipeline,
)

PROMPTS = [
    "a red ball rolls to the left across a gray floor",
    "a blue cube spins slowly, static camera",
    "a green bar moves up, the camera pans right",
    "two yellow circles bounce on a white background",
]
CANDIDATES = 8


def tiny_scorer(cot_tokens: int, seed: int = 0) -> DeScore:
    """A tiny random Qwen3-VL DeScore that samples the 16 fps toy clips at 8 fps and thinks for ``cot_tokens``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DeScore.from_backbone(
            build_qwen_vl("qwen3_vl", "tiny", seed=seed),
            build_qwen_vl_processor("qwen3_vl", "tiny"),
            sampling={
                "fps": 8.0,
                "min_frames": 2,
                "max_frames": 16,
                "min_pixels": 32 * 32,
                "max_pixels": 64 * 64,
            },
            generation={"max_new_tokens": cot_tokens, "repetition_penalty": 1.05},
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each generation mode")
    parser.add_argument("--trials", type=int, default=8, help="candidate sets for the cascade comparison")
    parser.add_argument(
        "--cot-tokens", type=int, default=48, help="chain-of-thought length of the think mode"
    )
    parser.add_argument(
        "--think-batch",
        type=int,
        default=1,
        help="videos per thinking pass (long videos, thousands of visual tokens each, rarely fit more)",
    )
    parser.add_argument("--steps", type=int, default=10, help="denoising steps per video")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pipe = build_video_pipeline("wan2.1", seed=0)
    call = {**PIPELINE_CALL_DEFAULTS["wan2.1"], "num_inference_steps": args.steps}
    scorer = tiny_scorer(args.cot_tokens)
    free = descore_reward(scorer, "think_free", batch_size=CANDIDATES)
    shape = f"{call['num_frames']} frames {call['height']}x{call['width']}, {args.steps} steps"

    # 1. batched vs sequential ----------------------------------------------------------------------------------
    runs = {"batched": [], "sequential": []}
    results = {}
    best_of_n(pipe, PROMPTS[0], 2, free, seeds=0, batch_size=2, progress=False, **call)  # warm-up
    for _ in range(args.rounds):
        for mode, size in (("batched", CANDIDATES), ("sequential", 1)):
            start = time.perf_counter()
            results[mode] = best_of_n(
                pipe, PROMPTS[0], CANDIDATES, free, seeds=100, batch_size=size, progress=False, **call
            )
            runs[mode].append(time.perf_counter() - start)
    assert results["batched"].index == results["sequential"].index, (
        "batched and sequential picked different winners"
    )
    assert torch.allclose(results["batched"].rewards, results["sequential"].rewards, atol=1e-4)
    print(
        f"best-of-{CANDIDATES}, tiny Wan 2.1 ({shape}), think-free DeScore, {args.rounds} rounds alternating"
    )
    print(f"{'':34s}{'best':>9s}{'median':>10s}")
    for mode, label in (
        ("sequential", "sequential (batch_size=1)"),
        ("batched", f"batched (batch_size={CANDIDATES})"),
    ):
        print(f"{label:34s}{min(runs[mode]):8.2f}s{statistics.median(runs[mode]):9.2f}s")
    print(
        f"{'ratio (sequential / batched)':34s}{min(runs['sequential']) / min(runs['batched']):8.2f}x"
        f"{statistics.median(runs['sequential']) / statistics.median(runs['batched']):9.2f}x"
    )

    # 2. cascade vs full think ----------------------------------------------------------------------------------
    think = DeScoreReward(scorer, "think", batch_size=args.think_batch)
    cascade = CascadeReward(free, think, top_k=2)
    seconds = {"think": 0.0, "cascade": 0.0}
    same = 0
    for trial in range(args.trials):
        prompt = PROMPTS[trial % len(PROMPTS)]
        videos = best_of_n(
            pipe,
            prompt,
            CANDIDATES,
            free,
            seeds=1000 * trial,
            batch_size=CANDIDATES,
            keep_videos=True,
            progress=False,
            **call,
        ).videos
        with torch.inference_mode():
            start = time.perf_counter()
            full = think.evaluate(videos, prompt, fps=16.0)
            seconds["think"] += time.perf_counter() - start
            start = time.perf_counter()
            shortlisted = cascade.evaluate(videos, prompt, fps=16.0)
            seconds["cascade"] += time.perf_counter() - start
        cascade_pick = int(torch.nan_to_num(shortlisted.rewards, nan=-float("inf")).argmax())
        same += cascade_pick == int(full.rewards.argmax())
    print(
        f"\ncascade (think-free x{CANDIDATES}, think x2) vs think x{CANDIDATES}, {args.trials} candidate sets, "
        f"{args.cot_tokens}-token chains of thought, {args.think_batch} video(s) per thinking pass"
    )
    print(f"{'scoring time, think for all':34s}{seconds['think'] / args.trials:8.2f}s per set")
    print(f"{'scoring time, cascade':34s}{seconds['cascade'] / args.trials:8.2f}s per set")
    print(f"{'cost ratio (cascade / think)':34s}{seconds['cascade'] / seconds['think']:8.2f}x")
    print(f"{'same winner as full think':34s}{same:5d} / {args.trials}")


if __name__ == "__main__":
    main()
