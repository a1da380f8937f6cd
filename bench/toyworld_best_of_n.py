"""Does best-of-8 by the shipped toy DeScore pick better videos than a random pick? Judged by the toy analyzer.

For each of N fresh toy prompts the shipped toy generator makes 8 candidates; the toy DeScore picks one (think and
think-free); the analyzer measures every candidate against its prompt (the world's ground truth, 1-5). Printed:
the mean analyzer score of DeScore's pick, of a random pick (the candidates' mean) and of the best candidate, and the
gain of DeScore's pick over a random pick with a paired 95% bootstrap interval over prompts (an interval that
contains 0 means the benchmark cannot tell the pick from a random one).

    python bench/toyworld_best_of_n.py [--prompts 50] [--candidates 8] [--reward-model DIR]

Each mode runs in one thread; run the modes or seeds as separate processes to use several cores, save each run's
per-prompt gains (``--gains-out``) and pool them (``--pool FILE ...``).
The per-prompt gains of the runs the README reports (the shipped checkpoint, ``--seed`` 2-11) are in
``bench/results/toyworld_best_of_n/``: ``--pool bench/results/toyworld_best_of_n/*.json`` prints the pooled gain.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from toyworld.demo import DemoReport, run_demo, summary


def prompt_gains(report: DemoReport) -> np.ndarray:
    """Per prompt: the analyzer score of DeScore's pick minus the candidates' mean (a random pick's expectation)."""
    return np.array(
        [r.candidates[r.winner].truth - np.mean([c.truth for c in r.candidates]) for r in report.results]
    )


def gain_interval(report: DemoReport, resamples: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """Mean per-prompt gain of DeScore's pick over a random pick, with a paired 95% bootstrap interval."""
    return bootstrap_interval(prompt_gains(report), resamples, seed)


def bootstrap_interval(
    gains: np.ndarray, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of per-prompt gains with a 95% bootstrap interval over prompts."""
    draws = np.random.default_rng(seed).integers(len(gains), size=(resamples, len(gains)))
    low, high = np.percentile(gains[draws].mean(axis=1), [2.5, 97.5])
    return float(gains.mean()), float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=["think", "no_think"], choices=["think", "no_think"])
    parser.add_argument(
        "--reward-model", default=None, help="toy DeScore checkpoint to pick with (default: the shipped one)"
    )
    parser.add_argument(
        "--gains-out",
        default=None,
        help="write each mode's per-prompt gains here (JSON), to pool several runs",
    )
    parser.add_argument(
        "--pool",
        nargs="+",
        default=None,
        help="instead of running: pool the --gains-out files of several runs",
    )
    args = parser.parse_args()
    if args.pool:
        pooled: dict[str, list[float]] = {}
        for path in args.pool:
            for mode, values in json.loads(Path(path).read_text()).items():
                pooled.setdefault(mode, []).extend(values)
        for mode, values in pooled.items():
            gain, low, high = bootstrap_interval(np.array(values))
            print(f"{mode}: {len(values)} prompts, gain {gain:+.3f} [{low:+.3f}, {high:+.3f}]")
        return
    torch.set_num_threads(1)
    gains: dict[str, list[float]] = {}
    print(f"{args.prompts} prompts x {args.candidates} candidates, analyzer score 1-5 (higher is better)")
    print(
        f"{'picker':<22} {'DeScore pick':>13} {'random pick':>12} {'best of N':>10} {'gain [95% interval]':>24} "
        f"{'seconds':>8}"
    )
    for mode in args.modes:
        label, think = f"toy DeScore, {mode.replace('_', ' ')}", mode == "think"
        start = time.perf_counter()
        report = run_demo(
            num_prompts=args.prompts,
            num_candidates=args.candidates,
            seed=args.seed,
            guidance_prompts=0,
            reward_model_path=args.reward_model,
            think=think,
            gifs=False,
            progress=False,
        )
        s = summary(report)
        per_prompt = prompt_gains(report)
        gain, low, high = bootstrap_interval(per_prompt)
        gains[mode] = per_prompt.tolist()
        interval = f"{gain:+.3f} [{low:+.3f}, {high:+.3f}]"
        print(
            f"{label:<22} {s['descore_pick']:>13.3f} {s['random_pick']:>12.3f} {s['best_candidate']:>10.3f} "
            f"{interval:>24} {time.perf_counter() - start:>8.0f}"
        )
    if args.gains_out:
        Path(args.gains_out).write_text(json.dumps(gains))


if __name__ == "__main__":
    main()
