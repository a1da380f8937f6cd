"""Does best-of-8 by the shipped toy DeScore pick better videos than a random pick? Judged by the toy analyzer.

For each of N fresh toy prompts the shipped toy generator makes 8 candidates; the toy DeScore picks one (think and
think-free); the analyzer measures every candidate against its prompt (the world's ground truth, 1-5). Printed:
the mean analyzer score of DeScore's pick, of a random pick (the candidates' mean) and of the best candidate, and the
gain of DeScore's pick over a random pick with a paired 95% bootstrap interval over prompts (an interval that
contains 0 means the benchmark cannot tell the pick from a random one).

    python bench/toyworld_best_of_n.py [--prompts 50] [--candidates 8] [--reward-model DIR]

Also printed: the pick's gain at best of 2 and 4 (the first k candidates of each prompt) and the mean within-prompt
Spearman correlation of DeScore's reward with the analyzer score, which uses every candidate and so is less noisy
than the pick.

Each mode runs in one thread; run the modes or seeds as separate processes to use several cores, save each run's
candidates (``--candidates-out``: per prompt, every candidate's reward and analyzer score) and pool them (``--pool FILE
...``).
The candidates of the runs the README reports (the shipped checkpoint, ``--seed`` 2-11) are in
``bench/results/toyworld_best_of_n/``: ``--pool bench/results/toyworld_best_of_n/*.json`` prints the pooled figures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from toyworld.demo import DemoReport, run_demo, summary


def candidate_table(report: DemoReport) -> list[dict[str, list[float]]]:
    """Per prompt: every candidate's DeScore reward and analyzer score, in candidate order."""
    return [
        {"rewards": [c.reward for c in r.candidates], "truths": [c.truth for c in r.candidates]}
        for r in report.results
    ]


def pick_gains(table: list[dict[str, list[float]]], k: int | None = None) -> np.ndarray:
    """Per prompt: the analyzer score of the highest-reward candidate among the first ``k`` (all: None), minus those
    candidates' mean (a random pick's expectation)."""
    gains = []
    for row in table:
        rewards, truths = np.array(row["rewards"][:k]), np.array(row["truths"][:k])
        gains.append(truths[int(np.argmax(rewards))] - truths.mean())
    return np.array(gains)


def rank_correlations(table: list[dict[str, list[float]]]) -> np.ndarray:
    """Per prompt: Spearman correlation of reward and analyzer score over its candidates (prompts whose candidates
    all score the same are left out: their ranking says nothing)."""
    out = []
    for row in table:
        truths = np.array(row["truths"])
        if np.ptp(truths) == 0 or np.ptp(row["rewards"]) == 0:
            continue
        out.append(np.corrcoef(_ranks(np.array(row["rewards"])), _ranks(truths))[0, 1])
    return np.array(out)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=float)
    for v in np.unique(values):
        tied = values == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def describe(table: list[dict[str, list[float]]]) -> str:
    """The pick's gain at best of 2, 4 and all candidates, and the within-prompt rank correlation, with intervals."""
    n = len(table[0]["rewards"])
    parts = [f"best of {k}: {_interval(pick_gains(table, k))}" for k in sorted({2, 4, n}) if k <= n]
    parts.append(f"within-prompt Spearman: {_interval(rank_correlations(table))}")
    return f"{len(table)} prompts; " + "; ".join(parts)


def _interval(values: np.ndarray) -> str:
    mean, low, high = bootstrap_interval(values)
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"


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
        "--candidates-out",
        default=None,
        help="write every candidate's reward and analyzer score here (JSON, per mode and prompt), to pool runs",
    )
    parser.add_argument(
        "--pool",
        nargs="+",
        default=None,
        help="instead of running: pool the --candidates-out files of several runs",
    )
    args = parser.parse_args()
    if args.pool:
        pooled: dict[str, list[dict[str, list[float]]]] = {}
        for path in args.pool:
            for mode, table in json.loads(Path(path).read_text()).items():
                pooled.setdefault(mode, []).extend(table)
        for mode, table in pooled.items():
            print(f"{mode}: {describe(table)}")
        return
    torch.set_num_threads(1)
    tables: dict[str, list[dict[str, list[float]]]] = {}
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
        tables[mode] = candidate_table(report)
        print(
            f"{label:<22} {s['descore_pick']:>13.3f} {s['random_pick']:>12.3f} {s['best_candidate']:>10.3f} "
            f"{_interval(pick_gains(tables[mode])):>24} {time.perf_counter() - start:>8.0f}"
        )
        print(f"  {describe(tables[mode])}")
    if args.candidates_out:
        Path(args.candidates_out).write_text(json.dumps(tables))


if __name__ == "__main__":
    main()
