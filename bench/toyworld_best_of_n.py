"""Does best-of-8 by the shipped toy DeScore pick better videos than a random pick? Judged by the toy analyzer.

For each of N fresh toy prompts the shipped toy generator makes 8 candidates; the toy DeScore picks one (think and
think-free); the analyzer measures every candidate against its prompt (the world's ground truth, 1-5). Printed:
the mean analyzer score of DeScore's pick, of a random pick (the candidates' mean) and of the best candidate.

    python bench/toyworld_best_of_n.py [--prompts 50] [--candidates 8]
"""

from __future__ import annotations

import argparse
import time

import torch

from toyworld.demo import run_demo, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=["think", "no_think"], choices=["think", "no_think"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{args.prompts} prompts x {args.candidates} candidates, analyzer score 1-5 (higher is better)")
    print(f"{'picker':<22} {'DeScore pick':>13} {'random pick':>12} {'best of N':>10} {'seconds':>8}")
    for mode in args.modes:
        label, think = f"toy DeScore, {mode.replace('_', ' ')}", mode == "think"
        start = time.perf_counter()
        report = run_demo(
            num_prompts=args.prompts, num_candidates=args.candidates, seed=args.seed, guidance_prompts=0,
            think=think, gifs=False, progress=False,
        )
        s = summary(report)
        print(
            f"{label:<22} {s['descore_pick']:>13.3f} {s['random_pick']:>12.3f} {s['best_candidate']:>10.3f} "
            f"{time.perf_counter() - start:>8.0f}"
        )


if __name__ == "__main__":
    main()
