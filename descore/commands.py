"""`descore score` and `descore compare`: score videos from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="DeScore checkpoint directory (written by save_pretrained)")
    p.add_argument("--prompt", required=True, help="the prompt the video(s) were generated from")
    p.add_argument(
        "--no-think", dest="think", action="store_false", help="score without writing a chain of thought"
    )
    p.add_argument("--batch-size", type=int, default=8, help="videos per backbone batch (default 8)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None, help="backbone dtype")
    p.add_argument("--device", default=None, help="device to run on, e.g. cuda:0 (default: cpu)")
    p.add_argument(
        "--max-new-tokens", type=int, default=None, help="cap on CoT length (default: from checkpoint)"
    )
    p.add_argument("--json", action="store_true", help="print results as JSON")


def _load(args: argparse.Namespace):
    import torch

    from descore.scoring import DeScore

    kwargs: dict[str, Any] = {}
    if args.dtype:
        kwargs["dtype"] = getattr(torch, args.dtype)
    scorer = DeScore.from_pretrained(args.model, **kwargs)
    if args.device:
        scorer.model.to(args.device)
    return scorer


def _generation(args: argparse.Namespace) -> dict[str, Any]:
    return {} if args.max_new_tokens is None else {"max_new_tokens": args.max_new_tokens}


def _run_score(args: argparse.Namespace) -> int:
    scorer = _load(args)
    out = scorer.score(
        args.videos, args.prompt, think=args.think, batch_size=args.batch_size, generation=_generation(args)
    )
    rows = []
    for i, path in enumerate(args.videos):
        answer = out.answers[i]
        rows.append(
            {
                "video": path,
                "reward": float(out.rewards[i]),
                **{
                    f"reward_{d}": float(v[i])
                    for d, v in out.rewards_by_dimension.items()
                    if len(out.rewards_by_dimension) > 1
                },
                "cot": out.cots[i],
                "dimensional_scores": None if answer is None else answer.dimensional_scores,
                "overall_score": None if answer is None else answer.overall_score,
            }
        )
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for row in rows:
            print(f"{row['reward']:+.4f}  {row['video']}")
            if row["cot"]:
                print("    " + row["cot"].replace("\n", "\n    "))
    return 0


def _run_compare(args: argparse.Namespace) -> int:
    scorer = _load(args)
    result = scorer.compare(
        args.video_a,
        args.video_b,
        args.prompt,
        tie_threshold=args.tie_threshold,
        think=args.think,
        batch_size=args.batch_size,
        generation=_generation(args),
    )
    payload = {
        "preferred": result.preferred,
        "reward_a": result.reward_a,
        "reward_b": result.reward_b,
        "cot_a": result.details.cots[0],
        "cot_b": result.details.cots[1],
    }
    if args.json:
        json.dump(payload, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"preferred: {result.preferred}  (A {result.reward_a:+.4f}, B {result.reward_b:+.4f})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="score videos against a prompt",
        description="Score one or more videos against the prompt they were generated from. By default the model "
        "writes its chain of thought first (think-then-score); --no-think scores in one forward pass.",
    )
    p.add_argument(
        "videos", nargs="+", metavar="VIDEO", help="video files (mp4, webm, gif, mov) or frame folders"
    )
    _add_model_arguments(p)
    p.set_defaults(func=_run_score)

    p = sub.add_parser(
        "compare",
        help="which of two videos better realises a prompt",
        description="Compare two videos generated from the same prompt; prints A, B or tie.",
    )
    p.add_argument("video_a", metavar="A", help="first video")
    p.add_argument("video_b", metavar="B", help="second video")
    _add_model_arguments(p)
    p.add_argument(
        "--tie-threshold", type=float, default=0.0, help="call a tie when |r_A - r_B| <= this (default 0)"
    )
    p.set_defaults(func=_run_compare)

    from descore import training_cli

    training_cli.register(sub)
