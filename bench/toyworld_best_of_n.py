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

Generating the candidates is most of a run's time (about 8 min per 100 prompts, against about 1 min to score them
with think). To compare reward models on the same candidates, save them once (``--videos-out FILE.npz``: frames,
prompts, seeds and analyzer scores; about 200 MB per 100 prompts) and score them again with any checkpoint
(``--rescore FILE.npz ... --reward-model DIR``), which gives the rewards the pipeline gives to within float rounding.
The candidates of the runs the README reports are in ``bench/results/toyworld_best_of_n/`` (the shipped checkpoint,
``--seed`` 2-5 and 12-31; ``--pool bench/results/toyworld_best_of_n/seed_{22..31}.json`` prints the pre-registered
run) and ``bench/results/toyworld_best_of_n_no_mirrors/`` (the previous checkpoint, trained without mirrored views,
on the same candidates and on seeds 6-11).

Which flaws does the judge see in the generator's samples? ``--rescore FILE.npz ... --by-dimension`` also prints the
within-prompt Spearman correlation of the reward with each analyzer sub-score. ``--rescore FILE.npz ... --pairs-out
DIR`` scores nothing: it writes the candidates as analyzer-labelled preference pairs (``DIR/<file>/`` per file, all
of them in ``DIR/train.csv``), the on-policy data to tune a judge with ``descore train cold-start``
(docs/recipes.md, "the judge").
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from descore.answer import DIMENSIONS
from descore.errors import DataError
from descore.metrics import bootstrap_interval
from descore.scoring import DeScore
from toyworld.analyzer import analyze
from toyworld.dataset import build_candidate_dataset, concatenate_pair_files, generated_pair_files
from toyworld.demo import DEFAULT_REWARD_MODEL, Candidate, DemoReport, PromptResult, run_demo, summary
from toyworld.generator import WORLD

#: What a ``--videos-out`` file holds (arrays of a numpy ``.npz``).
VIDEO_FILE_KEYS = ("frames", "truths", "prompts", "seeds")


def candidate_table(report: DemoReport) -> list[dict[str, list[float]]]:
    """Per prompt: every candidate's DeScore reward and analyzer score, in candidate order."""
    return [
        {"rewards": [c.reward for c in r.candidates], "truths": [c.truth for c in r.candidates]}
        for r in report.results
    ]


def save_candidates(report: DemoReport, path: str | Path) -> None:
    """Write every candidate's frames with its prompt, seed and analyzer score (a run with ``keep_videos``)."""
    if any(c.video is None for r in report.results for c in r.candidates):
        raise ValueError("save_candidates needs a report of run_demo(..., keep_videos=True)")
    np.savez(
        path,
        frames=np.stack([np.stack([c.video.float().numpy() for c in r.candidates]) for r in report.results]),
        truths=np.array([[c.truth for c in r.candidates] for r in report.results]),
        prompts=np.array([r.prompt for r in report.results]),
        seeds=np.array([[c.seed for c in r.candidates] for r in report.results]),
    )


def load_candidates(path: str | Path) -> dict[str, np.ndarray]:
    """Read a :func:`save_candidates` file, checking that its arrays fit together."""
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in VIDEO_FILE_KEYS if k not in data.files]
        if missing:
            raise DataError(
                str(path), [f"not a --videos-out file: missing arrays {missing} of {VIDEO_FILE_KEYS}"]
            )
        arrays = {k: data[k] for k in VIDEO_FILE_KEYS}
    frames = arrays["frames"]
    if frames.ndim != 6 or frames.shape[3] != 3:
        raise DataError(str(path), [f"frames must be (prompts, candidates, T, 3, H, W), got {frames.shape}"])
    expected = {"truths": frames.shape[:2], "seeds": frames.shape[:2], "prompts": frames.shape[:1]}
    problems = [
        f"{key} has shape {arrays[key].shape}, expected {shape} to match the frames"
        for key, shape in expected.items()
        if arrays[key].shape != shape
    ]
    if problems:
        raise DataError(str(path), problems)
    return arrays


def rescore(paths: list[str], reward_model: str | Path | None, think: bool) -> DemoReport:
    """Score saved candidates with a DeScore checkpoint: the report of a run that had generated them (no CoTs,
    findings or GIFs), with the highest-reward candidate of each prompt as its winner."""
    scorer = DeScore.from_pretrained(reward_model or DEFAULT_REWARD_MODEL)
    report = DemoReport()
    for path in paths:
        arrays = load_candidates(path)
        frames, (num_prompts, num_candidates) = arrays["frames"], arrays["truths"].shape
        videos = [torch.from_numpy(frames[i, k]) for i in range(num_prompts) for k in range(num_candidates)]
        prompts = [str(p) for p in arrays["prompts"] for _ in range(num_candidates)]
        rewards = scorer.score(
            videos, prompts, think=think, video_fps=float(WORLD.fps), progress=False
        ).rewards
        for prompt, row, truths, seeds in zip(
            arrays["prompts"],
            rewards.reshape(num_prompts, num_candidates).tolist(),
            arrays["truths"],
            arrays["seeds"],
        ):
            candidates = [
                Candidate(seed=int(seed), reward=r, cot=None, truth=float(t), findings=(), gif=None)
                for seed, r, t in zip(seeds, row, truths)
            ]
            report.results.append(PromptResult(str(prompt), candidates, int(np.argmax(row))))
    return report


def subscore_table(paths: list[str]) -> dict[str, list[list[float | None]]]:
    """Per analyzer dimension: every saved candidate's sub-score (None: not applicable), per prompt in file order,
    measured again from the saved frames."""
    table: dict[str, list[list[float | None]]] = {d: [] for d in DIMENSIONS}
    for path in paths:
        arrays = load_candidates(path)
        for prompt, group in zip(arrays["prompts"], arrays["frames"]):
            analyses = [analyze(torch.from_numpy(frames), str(prompt)) for frames in group]
            for d in DIMENSIONS:
                table[d].append([a.subscores[d] for a in analyses])
    return table


def dimension_correlations(
    table: list[dict[str, list[float]]], subscores: dict[str, list[list[float | None]]]
) -> dict[str, np.ndarray]:
    """Per dimension: the within-prompt Spearman correlations of the reward with that sub-score (prompts where the
    dimension does not apply to every candidate are left out, like those whose candidates all score the same)."""
    return {
        d: rank_correlations(
            [
                {"rewards": row["rewards"], "truths": scores}
                for row, scores in zip(table, per_prompt)
                if None not in scores
            ]
        )
        for d, per_prompt in subscores.items()
    }


def write_pairs(paths: list[str], out: str | Path) -> Path:
    """Saved candidates -> analyzer-labelled preference pairs of every two candidates of a prompt
    (:func:`toyworld.dataset.build_candidate_dataset`, one folder per file), all in ``out/train.csv``. A file whose
    folder already holds its pairs (an interrupted run) is not written again."""
    out = Path(out)
    files = []
    for path in paths:
        folder = out / Path(path).stem
        pairs = generated_pair_files(folder)["train"]
        if pairs.exists():
            print(f"{path}: pairs already in {folder}")
        else:
            arrays = load_candidates(path)
            summary = build_candidate_dataset(
                folder,
                arrays["frames"],
                [str(p) for p in arrays["prompts"]],
                arrays["seeds"],
                fps=float(WORLD.fps),
                test_fraction=0.0,
                progress=False,
            )
            print(f"{path}: {summary.pairs['train']} pairs, ties included")
        files.append(pairs)
    return concatenate_pair_files(files, out / "train.csv")


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
    parser.add_argument(
        "--videos-out",
        default=None,
        help="also save every candidate's frames, prompt, seed and analyzer score here (.npz), for --rescore",
    )
    parser.add_argument(
        "--rescore",
        nargs="+",
        default=None,
        help="instead of generating: score the candidates of --videos-out files with --reward-model",
    )
    parser.add_argument(
        "--by-dimension",
        action="store_true",
        help="with --rescore: also the reward's within-prompt correlation with each analyzer sub-score",
    )
    parser.add_argument(
        "--pairs-out",
        default=None,
        help="with --rescore, instead of scoring: write the candidates as analyzer-labelled pairs to this folder",
    )
    args = parser.parse_args()
    if args.rescore and args.videos_out:
        parser.error("--videos-out saves generated candidates; --rescore generates none")
    if (args.by_dimension or args.pairs_out) and not args.rescore:
        parser.error("--by-dimension and --pairs-out read saved candidates: pass --rescore FILE.npz ...")
    if args.pairs_out:
        print(f"pairs of every candidate: {write_pairs(args.rescore, args.pairs_out)}")
        return
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
    subscores: dict[str, list[list[float | None]]] = {}
    if not args.rescore:
        print(f"{args.prompts} prompts x {args.candidates} candidates, analyzer score 1-5 (higher is better)")
    print(
        f"{'picker':<22} {'DeScore pick':>13} {'random pick':>12} {'best of N':>10} {'gain [95% interval]':>24} "
        f"{'seconds':>8}"
    )
    for mode in args.modes:
        label, think = f"toy DeScore, {mode.replace('_', ' ')}", mode == "think"
        start = time.perf_counter()
        if args.rescore:
            report = rescore(args.rescore, args.reward_model, think)
        else:
            report = run_demo(
                num_prompts=args.prompts,
                num_candidates=args.candidates,
                seed=args.seed,
                guidance_prompts=0,
                reward_model_path=args.reward_model,
                think=think,
                gifs=False,
                keep_videos=bool(args.videos_out),
                progress=False,
            )
            if args.videos_out and mode == args.modes[0]:  # every mode generates the same candidates
                save_candidates(report, args.videos_out)
        s = summary(report)
        tables[mode] = candidate_table(report)
        print(
            f"{label:<22} {s['descore_pick']:>13.3f} {s['random_pick']:>12.3f} {s['best_candidate']:>10.3f} "
            f"{_interval(pick_gains(tables[mode])):>24} {time.perf_counter() - start:>8.0f}"
        )
        print(f"  {describe(tables[mode])}")
        if args.by_dimension:
            subscores = subscores or subscore_table(args.rescore)  # the same candidates in every mode
            for dimension, correlations in dimension_correlations(tables[mode], subscores).items():
                print(
                    f"  {dimension:<12} within-prompt Spearman {_interval(correlations)} ({len(correlations)} prompts)"
                )
    if args.candidates_out:
        Path(args.candidates_out).write_text(json.dumps(tables))


if __name__ == "__main__":
    main()
