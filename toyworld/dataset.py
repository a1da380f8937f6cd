"""Build a toy preference dataset on disk, in the file formats of real video-preference data.

Layout of ``out_dir``::

    train.csv, test_id.csv, test_ood.csv   pair files (columns below), video paths relative to out_dir
    videos/<split>/<prompt>_<k>.mp4         the videos (H.264, deterministic encoder settings)
    videos.jsonl                            one record per video: asked scene, shown scene, defects, sub-scores
    world.json                              seed, geometry, held-out combinations, counts

Pair-file columns: VideoAlign's ``path_A, path_B, prompt, A_model, B_model, fps_A, num_frames_A, fps_B,
num_frames_B, VQ, MQ, TA, Overall``, the DeScore judge dimensions ``subject, dynamics, camera, environment,
style`` (labels A / B / same), ``CoT_A, CoT_B`` and the ground truth ``gt_<dimension>_A`` / ``gt_<dimension>_B``
(0, 1, 2 or N/A). Each prompt gets ``videos_per_prompt`` videos (each with its own random defects) and every pair
among them becomes a row, A and B in random order.

Splits: ``train`` and ``test_id`` never contain a held-out (colour, shape) combination, neither in a prompt nor in
what a video shows; every ``test_ood`` prompt asks for at least one. Everything derives from the seed: the same
seed writes byte-identical files.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from descore.answer import DIMENSIONS, SubScore
from descore.errors import ConfigError
from descore.training.sft import StreamedCoT
from descore.video_io import read_video, write_video
from toyworld.analyzer import analyze
from toyworld.annotator import annotate_analysis, annotate_cot, annotate_track
from toyworld.defects import apply_defects, ground_truth, sample_defects
from toyworld.mirror import check_views, mirror_frames, mirror_prompt
from toyworld.preferences import LABEL_COLUMNS, label_pair, utility
from toyworld.prompts import write_prompt
from toyworld.render import render
from toyworld.scene import OBJECT_COLORS, SHAPES, Scene, SceneSpec, WorldConfig, sample_scene

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "test_id", "test_ood")
#: CoT styles: ``full`` (the three stages of the judge, from the ground truth), ``brief`` (ratings and answer only,
#: for short contexts) and ``track`` (:func:`toyworld.annotator.annotate_track`, from the analyzer's measurement).
COT_STYLES: tuple[str, ...] = ("full", "brief", "track")
CoTStyle = Literal["full", "brief", "track"]
#: VideoAlign's pair columns, in their order.
VIDEOALIGN_COLUMNS: tuple[str, ...] = (
    "path_A",
    "path_B",
    "prompt",
    "A_model",
    "B_model",
    "fps_A",
    "num_frames_A",
    "fps_B",
    "num_frames_B",
)
#: Every column of a toy pair file, in file order.
PAIR_COLUMNS: tuple[str, ...] = (
    *VIDEOALIGN_COLUMNS,
    *LABEL_COLUMNS,
    "CoT_A",
    "CoT_B",
    *(f"gt_{d}_A" for d in DIMENSIONS),
    *(f"gt_{d}_B" for d in DIMENSIONS),
)
#: What the A_model / B_model columns name: the procedural renderer with sampled defects.
MODEL_NAME = "toyworld-render"
#: Encoder settings that make mp4 bytes depend only on the frames (one thread; write_video adds no timestamps).
ENCODER_OPTIONS = {"threads": "1"}
FORMAT_VERSION = 1


@dataclass(frozen=True)
class DatasetSummary:
    """What :func:`build_dataset` wrote: the pair files per split, and counts."""

    out_dir: Path
    pair_files: dict[str, Path]
    pairs: dict[str, int]
    videos: int
    held_out: tuple[tuple[str, str], ...]


def held_out_combinations(seed: int) -> tuple[tuple[str, str], ...]:
    """The (colour, shape) pairs kept out of training: one shape per colour, shapes spread evenly, from the seed."""
    rng = np.random.default_rng([seed, 7])
    shapes = [SHAPES[i] for i in rng.permutation(len(SHAPES))]
    return tuple((color, shapes[i % len(shapes)]) for i, color in enumerate(OBJECT_COLORS))


def _combos(spec: SceneSpec) -> set[tuple[str, str]]:
    return {(o.color, o.shape) for o in spec.objects}


def _split_sizes(pairs: int, fractions: Sequence[float]) -> dict[str, int]:
    if isinstance(pairs, bool) or not isinstance(pairs, (int, np.integer)) or pairs < 1:
        raise ConfigError(f"the number of pairs must be a positive integer, got {pairs!r}")
    if (
        len(fractions) != len(SPLITS)
        or any(f < 0 for f in fractions)
        or not math.isclose(sum(fractions), 1.0)
    ):
        raise ConfigError(
            f"split fractions must be {len(SPLITS)} non-negative numbers summing to 1, got {fractions}"
        )
    test = [round(pairs * f) for f in fractions[1:]]
    if pairs >= len(SPLITS):
        test = [max(1, n) if f > 0 else 0 for n, f in zip(test, fractions[1:])]
    train = pairs - sum(test)
    if train < 0 or (train == 0 and fractions[0] > 0):
        raise ConfigError(f"{pairs} pair(s) are too few for the split fractions {fractions}")
    return dict(zip(SPLITS, [train, *test]))


def _sample_prompt_scene(rng: np.random.Generator, config: WorldConfig, split: str, held_out: set) -> Scene:
    while True:
        scene = sample_scene(rng, config)
        combos = _combos(scene.spec)
        if (split == "test_ood") == bool(combos & held_out):
            return scene


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ConfigError(
            f"{out_dir}: folder is not empty; choose a new folder or pass overwrite=True (--overwrite)"
        )


def _check_cot_style(cot_style: str) -> None:
    if cot_style not in COT_STYLES:
        raise ConfigError(f"cot_style must be one of {', '.join(COT_STYLES)}, got {cot_style!r}")


def _format_score(value: SubScore) -> str:
    return "N/A" if value is None else str(value)


def build_dataset(
    out_dir: str | os.PathLike[str],
    pairs: int,
    seed: int,
    *,
    config: WorldConfig | None = None,
    videos_per_prompt: int = 2,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    label_noise: float = 0.0,
    cot_style: CoTStyle = "full",
    crf: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> DatasetSummary:
    """Render and write a toy preference dataset of ``pairs`` pairs (all splits together), deterministic by seed.

    ``videos_per_prompt`` videos are made per prompt and all their pairs kept (so videos are shared between pairs,
    as in real data). ``label_noise`` flips pair labels (never the ground-truth columns). ``cot_style`` picks the
    CoTs (:data:`COT_STYLES`); ``track`` CoTs are written from the analyzer's measurement of the rendered frames, so
    their answer block is the analyzer's verdict while the labels stay the ground truth. ``crf`` is the H.264
    quality (default that of :func:`descore.video_io.write_video`).
    """
    config = config or WorldConfig()
    sizes = _split_sizes(pairs, split_fractions)
    if (
        isinstance(videos_per_prompt, bool)
        or not isinstance(videos_per_prompt, int)
        or not 2 <= videos_per_prompt <= 8
    ):
        raise ConfigError(f"videos_per_prompt must be an integer from 2 to 8, got {videos_per_prompt!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"the seed must be a non-negative integer, got {seed!r}")
    if not 0.0 <= label_noise <= 1.0:
        raise ConfigError(f"label noise must be a probability in [0, 1], got {label_noise!r}")
    _check_cot_style(cot_style)
    out = Path(out_dir)
    _check_out_dir(out, overwrite)
    threads = torch.get_num_threads()
    # Each video is a tiny tensor: worker threads only add contention (3x slower writes on a busy 2-core machine).
    torch.set_num_threads(1)
    try:
        return _build(out, sizes, int(seed), config, videos_per_prompt, label_noise, cot_style, crf, progress)
    finally:
        torch.set_num_threads(threads)


def _build(
    out: Path,
    sizes: dict[str, int],
    seed: int,
    config: WorldConfig,
    videos_per_prompt: int,
    label_noise: float,
    cot_style: CoTStyle,
    crf: int | None,
    progress: bool,
) -> DatasetSummary:
    held_out = held_out_combinations(seed)
    held = set(held_out)
    per_prompt = videos_per_prompt * (videos_per_prompt - 1) // 2
    records: list[dict[str, Any]] = []
    files: dict[str, Path] = {}
    out.mkdir(parents=True, exist_ok=True)
    total_videos = sum(math.ceil(n / per_prompt) * videos_per_prompt for n in sizes.values())
    with tqdm(total=total_videos, desc="toy videos", unit="video", disable=not progress) as bar:
        for split_index, split in enumerate(SPLITS):
            rows, videos = _build_split(
                out,
                split,
                split_index,
                sizes[split],
                seed,
                config,
                videos_per_prompt,
                per_prompt,
                held,
                label_noise,
                cot_style,
                crf,
                bar,
            )
            records.extend(videos)
            files[split] = _write_pairs(out / f"{split}.csv", rows)
    with open(out / "videos.jsonl", "w", encoding="utf-8", newline="\n") as handle:
        handle.writelines(json.dumps(record, sort_keys=True) + "\n" for record in records)
    world = {
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "config": {
            "num_frames": config.num_frames,
            "height": config.height,
            "width": config.width,
            "fps": config.fps,
        },
        "videos_per_prompt": videos_per_prompt,
        "label_noise": label_noise,
        "held_out": [list(c) for c in held_out],
        "pairs": sizes,
        "videos": len(records),
    }
    (out / "world.json").write_text(json.dumps(world, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    logger.info("wrote %d pairs and %d videos to %s", sum(sizes.values()), len(records), out)
    return DatasetSummary(out_dir=out, pair_files=files, pairs=sizes, videos=len(records), held_out=held_out)


def _build_split(
    out: Path,
    split: str,
    split_index: int,
    count: int,
    seed: int,
    config: WorldConfig,
    videos_per_prompt: int,
    per_prompt: int,
    held: set,
    label_noise: float,
    cot_style: CoTStyle,
    crf: int | None,
    bar: tqdm,
) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """Sample, render and write one split; returns its pair rows and video records."""
    prompts = math.ceil(count / per_prompt) if count else 0
    forbidden = () if split == "test_ood" else held
    videos: list[dict[str, Any]] = []
    shown_scenes: list[Scene] = []
    groups: list[tuple[np.random.Generator, list[dict[str, Any]]]] = []
    for p in range(prompts):
        rng = np.random.default_rng([seed, split_index, p])
        asked = _sample_prompt_scene(rng, config, split, held)
        prompt = write_prompt(asked.spec, rng)
        group = []
        for k in range(videos_per_prompt):
            defects = sample_defects(asked, rng, forbidden_combos=forbidden)
            shown = apply_defects(asked, defects, config)
            scores = ground_truth(asked, defects)
            path = f"videos/{split}/{p:05d}_{k}.mp4"
            record = {
                "path": path,
                "split": split,
                "prompt": prompt,
                "asked": asked.to_dict(),
                "shown": shown.to_dict(),
                "defects": [d.to_dict() for d in defects],
                "subscores": {d: scores[d] for d in DIMENSIONS},
                "overall": utility(scores),
            }
            if cot_style != "track":
                record["cot"] = annotate_cot(prompt, shown, scores, rng, brief=cot_style == "brief")
            group.append(record)
            shown_scenes.append(shown)
        groups.append((rng, group))
        videos.extend(group)
    _write_videos(out, videos, shown_scenes, config, crf, bar, track_cots=cot_style == "track")
    rows: list[dict[str, str]] = []
    for rng, group in groups:
        for i, j in combinations(range(videos_per_prompt), 2):
            if len(rows) == count:
                break
            a, b = (group[i], group[j]) if rng.random() < 0.5 else (group[j], group[i])
            labels = label_pair(a["subscores"], b["subscores"], noise=label_noise, rng=rng)
            rows.append(_row(a, b, labels.labels, config.fps, config.num_frames, MODEL_NAME))
    return rows, videos


def _row(
    a: dict[str, Any], b: dict[str, Any], labels: dict[str, str], fps: float, num_frames: int, model: str
) -> dict[str, str]:
    row = {
        "path_A": a["path"],
        "path_B": b["path"],
        "prompt": a["prompt"],
        "A_model": model,
        "B_model": model,
        "fps_A": str(fps),
        "num_frames_A": str(num_frames),
        "fps_B": str(fps),
        "num_frames_B": str(num_frames),
        **labels,
        "CoT_A": a["cot"],
        "CoT_B": b["cot"],
    }
    for side, record in (("A", a), ("B", b)):
        for d in DIMENSIONS:
            row[f"gt_{d}_{side}"] = _format_score(record["subscores"][d])
    return row


def _write_videos(
    out: Path,
    records: list[dict[str, Any]],
    scenes: list[Scene],
    config: WorldConfig,
    crf: int | None,
    bar: tqdm,
    chunk: int = 64,
    track_cots: bool = False,
) -> None:
    """Render the videos in chunks and write each one where its record says; with ``track_cots``, also write each
    record's track CoT from the analyzer's measurement of the rendered frames."""
    for start in range(0, len(scenes), chunk):
        frames = render(scenes[start : start + chunk], config)
        for record, video in zip(records[start : start + chunk], frames):
            write_video(video, out / record["path"], fps=config.fps, crf=crf, options=ENCODER_OPTIONS)
            if track_cots:
                record["cot"] = annotate_track(analyze(video, record["prompt"]), record["prompt"])
        bar.update(len(frames))


def _write_pairs(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PAIR_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


#: Defects per streamed clip: 0, 1, 2 or 3 with these probabilities (more flawed clips than a pair file's, so that
#: the judge sees every kind of fault often).
STREAM_DEFECT_COUNTS: tuple[float, ...] = (0.15, 0.35, 0.3, 0.2)


class RenderedCoTStream:
    """Freshly rendered toy clips with track CoTs, made on demand: a :data:`descore.training.sft.CoTStream`.

    Each call samples ``count`` prompts (never a ``held_out`` (colour, shape) combination, in the prompt or in what
    is shown), renders each with random defects and writes its CoT from the analyzer's measurement of the rendered
    frames (:func:`toyworld.annotator.annotate_track`), exactly as generator samples are annotated. The examples
    depend only on the seed.
    """

    def __init__(
        self,
        config: WorldConfig,
        held_out: Sequence[tuple[str, str]] = (),
        defect_counts: Sequence[float] = STREAM_DEFECT_COUNTS,
    ):
        self.config = config
        self.held_out = set(map(tuple, held_out))
        self.defect_counts = tuple(defect_counts)

    def __call__(self, seed: int, count: int) -> list[StreamedCoT]:
        rng = np.random.default_rng(seed)
        prompts, scenes = [], []
        for _ in range(count):
            asked = _sample_prompt_scene(rng, self.config, "train", self.held_out)
            prompts.append(write_prompt(asked.spec, rng))
            defects = sample_defects(
                asked, rng, forbidden_combos=self.held_out, count_probabilities=self.defect_counts
            )
            scenes.append(apply_defects(asked, defects, self.config))
        return [
            StreamedCoT(
                frames=torch.from_numpy(frames),
                fps=float(self.config.fps),
                prompt=prompt,
                cot=annotate_track(analyze(frames, prompt), prompt),
            )
            for frames, prompt in zip(render(scenes, self.config), prompts)
        ]


#: The splits of :func:`build_generated_dataset`.
GENERATED_SPLITS: tuple[str, ...] = ("train", "test")


def build_generated_dataset(
    out_dir: str | os.PathLike[str],
    pipe: Any,
    prompts: Sequence[str],
    seed: int,
    *,
    call: dict[str, Any],
    fps: float,
    videos_per_prompt: int = 4,
    test_fraction: float = 0.2,
    batch_size: int = 8,
    model_name: str = "toy-generator",
    lossless: bool = True,
    cot_style: CoTStyle = "brief",
    mirrors: Sequence[str] = (),
    progress: bool = True,
) -> DatasetSummary:
    """Preference pairs of a generator's own samples, labelled by the analyzer (on-policy data for a reward model).

    For each prompt, ``videos_per_prompt`` samples of ``pipe(prompt, **call)`` (seed ``seed * 10**6 + index``) are
    written to ``videos/generated/<split>/``, losslessly unless ``lossless`` is False, and measured by
    :func:`toyworld.analyzer.analyze` as written. Stored losslessly, the labels and the reward model see the frames
    that best-of-N and the recipes score, up to 8-bit rounding (the analyzer's verdict keeps 0.966 correlation with
    the raw frames' verdict; on an H.264 copy 0.762, ``bench/analyzer_stability.py``). The sub-scores label every
    pair among them. The CoT is ``brief`` (ratings with the analyzer's findings,
    :func:`toyworld.annotator.annotate_analysis`) or ``track`` (:func:`toyworld.annotator.annotate_track`). Pair
    files ``generated_<split>.csv`` have the columns of :func:`build_dataset`, so both datasets can share one folder
    and be concatenated. The last ``test_fraction`` of the prompts form the test split.

    ``mirrors`` (views of :data:`toyworld.mirror.MIRRORS`) adds, for every training prompt, each view of its samples
    (``<prompt>_<k>_<view>.mp4``, written like the samples) under the prompt that asks for what the view shows,
    labelled by the analyzer on the view: a group of its own, so every view adds as many pairs as the original. The
    test split keeps the generator's samples only.

    Sampling is the slow part and resumes: every written sample is logged in ``generated_samples.jsonl``, and a
    rerun with the same arguments into the same folder samples only what is not logged yet.
    """
    out, split_of = _check_generated(out_dir, prompts, videos_per_prompt, test_fraction, cot_style, mirrors)
    jobs = [
        {
            "path": f"videos/generated/{split_of[p]}/{p:05d}_{k}.mp4",
            "split": split_of[p],
            "prompt": prompts[p],
            "seed": seed * 10**6 + p * videos_per_prompt + k,
            "lossless": lossless,
        }
        for p in range(len(prompts))
        for k in range(videos_per_prompt)
    ]
    samples = _sample_generator(out, pipe, jobs, call, fps, batch_size, progress)
    return _label_samples(
        out, samples, videos_per_prompt, seed, fps, model_name, cot_style, mirrors, progress
    )


def build_candidate_dataset(
    out_dir: str | os.PathLike[str],
    frames: np.ndarray,
    prompts: Sequence[str],
    seeds: np.ndarray,
    *,
    fps: float,
    seed: int = 0,
    test_fraction: float = 0.2,
    model_name: str = "toy-generator",
    cot_style: CoTStyle = "brief",
    mirrors: Sequence[str] = (),
    progress: bool = True,
) -> DatasetSummary:
    """:func:`build_generated_dataset` from samples made elsewhere, such as the best-of-N candidates that
    ``bench/toyworld_best_of_n.py --videos-out`` saves: ``frames`` (prompts, candidates, T, 3, H, W) in [0, 1] and
    their sampling ``seeds`` (prompts, candidates). The videos are written losslessly and labelled, paired and split
    exactly as there (``seed`` draws the pair order and the mirrored prompts)."""
    frames = np.asarray(frames)
    if frames.ndim != 6 or frames.shape[3] != 3 or frames.shape[:2] != np.shape(seeds):
        raise ConfigError(
            f"frames must be (prompts, candidates, T, 3, H, W) with seeds (prompts, candidates), got {frames.shape} "
            f"and {np.shape(seeds)}"
        )
    if len(prompts) != frames.shape[0]:
        raise ConfigError(f"{len(prompts)} prompts for {frames.shape[0]} groups of candidates")
    if not (frames.min() >= 0.0 and frames.max() <= 1.0):
        raise ConfigError(f"frames must be in [0, 1], got [{frames.min()}, {frames.max()}]")
    per_prompt = frames.shape[1]
    out, split_of = _check_generated(out_dir, prompts, per_prompt, test_fraction, cot_style, mirrors)
    samples = []
    for p, k in tqdm(
        np.ndindex(*frames.shape[:2]),
        total=frames.shape[0] * per_prompt,
        desc="candidate videos",
        disable=not progress,
    ):
        path = f"videos/generated/{split_of[p]}/{p:05d}_{k}.mp4"
        write_video(
            torch.from_numpy(frames[p, k]), out / path, fps=fps, options=ENCODER_OPTIONS, lossless=True
        )
        samples.append(
            {
                "path": path,
                "split": split_of[p],
                "prompt": prompts[p],
                "seed": int(seeds[p, k]),
                "lossless": True,
                "num_frames": int(frames.shape[2]),
            }
        )
    return _label_samples(out, samples, per_prompt, seed, fps, model_name, cot_style, mirrors, progress)


def _check_generated(
    out_dir: str | os.PathLike[str],
    prompts: Sequence[str],
    videos_per_prompt: int,
    test_fraction: float,
    cot_style: str,
    mirrors: Sequence[str],
) -> tuple[Path, list[str]]:
    """Check the arguments of a generated dataset; return its folder and the split of every prompt (the last
    ``test_fraction`` of them are the test split)."""
    if isinstance(videos_per_prompt, bool) or not isinstance(videos_per_prompt, int) or videos_per_prompt < 2:
        raise ConfigError(f"videos_per_prompt must be an integer >= 2, got {videos_per_prompt!r}")
    if not prompts:
        raise ConfigError("a generated dataset needs at least one prompt")
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    if cot_style not in ("brief", "track"):
        raise ConfigError(f"cot_style of generated samples must be brief or track, got {cot_style!r}")
    check_views(mirrors)
    out = Path(out_dir)
    existing = [str(f) for f in generated_pair_files(out).values() if f.exists()]
    if existing:
        raise ConfigError(f"{existing}: generated pair files already exist; choose a new folder")
    num_test = round(len(prompts) * test_fraction)
    return out, ["train"] * (len(prompts) - num_test) + ["test"] * num_test


def generated_pair_files(out: str | os.PathLike[str]) -> dict[str, Path]:
    """The pair file of every split of a generated (or candidate) dataset in ``out``."""
    return {split: Path(out) / f"generated_{split}.csv" for split in GENERATED_SPLITS}


def _label_samples(
    out: Path,
    samples: list[dict[str, Any]],
    videos_per_prompt: int,
    seed: int,
    fps: float,
    model_name: str,
    cot_style: str,
    mirrors: Sequence[str],
    progress: bool,
) -> DatasetSummary:
    """Label written samples (in prompt-major order) with the analyzer, add the mirrored views of the training
    samples, and write every pair within a prompt's group to ``generated_<split>.csv``."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for index, sample in enumerate(tqdm(samples, desc="analyzer labels", disable=not progress)):
        p, k = divmod(index, videos_per_prompt)
        views = [("", sample["prompt"])]
        if sample["split"] == "train" and mirrors:
            views += [
                (view, mirror_prompt(sample["prompt"], view, np.random.default_rng([seed, p, 1000 + v])))
                for v, view in enumerate(mirrors, start=1)
            ]
            original = read_video(out / sample["path"]).frames  # read once, flipped for every view
        for view, prompt in views:
            path = sample["path"]
            if view:
                path = path.removesuffix(".mp4") + f"_{view}.mp4"
                frames = mirror_frames(original, view)
                write_video(frames, out / path, fps=fps, options=ENCODER_OPTIONS, lossless=sample["lossless"])
            analysis = analyze(out / path, prompt)
            if cot_style == "track":
                cot = annotate_track(analysis, prompt)
            else:
                cot = annotate_analysis(analysis, np.random.default_rng([seed, p, k]))
            groups.setdefault((p, view), []).append(
                {
                    **{key: sample[key] for key in ("split", "seed", "num_frames")},
                    "path": path,
                    "prompt": prompt,
                    "subscores": {d: analysis.subscores[d] for d in DIMENSIONS},
                    "overall": analysis.overall,
                    "findings": list(analysis.findings),
                    "cot": cot,
                }
            )
    rows: dict[str, list[dict[str, str]]] = {split: [] for split in GENERATED_SPLITS}
    for (p, view), group in groups.items():
        rng = np.random.default_rng([seed, p, videos_per_prompt])
        for i, j in combinations(range(videos_per_prompt), 2):
            a, b = (group[i], group[j]) if rng.random() < 0.5 else (group[j], group[i])
            labels = label_pair(a["subscores"], b["subscores"]).labels
            rows[group[0]["split"]].append(_row(a, b, labels, fps, a["num_frames"], model_name))
    files = generated_pair_files(out)
    for split, path in files.items():
        _write_pairs(path, rows[split])
    with open(out / "generated_videos.jsonl", "w", encoding="utf-8", newline="\n") as handle:
        handle.writelines(
            json.dumps(record, sort_keys=True) + "\n" for group in groups.values() for record in group
        )
    return DatasetSummary(
        out_dir=out,
        pair_files=files,
        pairs={split: len(r) for split, r in rows.items()},
        videos=sum(len(group) for group in groups.values()),
        held_out=(),
    )


#: The sampling log of :func:`build_generated_dataset`: one line per written sample, what a rerun skips.
SAMPLING_LOG = "generated_samples.jsonl"


def _sample_generator(
    out: Path,
    pipe: Any,
    jobs: list[dict[str, Any]],
    call: dict[str, Any],
    fps: float,
    batch_size: int,
    progress: bool,
) -> list[dict[str, Any]]:
    """Write every job's sample (in batches) and return the jobs with their frame counts, in job order. Samples
    already in the sampling log (same path, prompt, seed and storage) are kept, so an interrupted run resumes."""
    log = out / SAMPLING_LOG
    done: dict[str, dict[str, Any]] = {}
    if log.exists():
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line cut by an interruption: that sample is made again
                continue
            done[entry["path"]] = entry
    wanted = {job["path"]: job for job in jobs}
    stale = [
        path
        for path, entry in done.items()
        if path in wanted and any(entry.get(key) != value for key, value in wanted[path].items())
    ]
    if stale:
        raise ConfigError(
            f"{log}: {len(stale)} logged sample(s) (first: {stale[0]}) were made with other prompts, seeds or "
            "storage than this call asks for; use a new folder"
        )
    todo = [job for job in jobs if job["path"] not in done or not (out / job["path"]).is_file()]
    if len(todo) < len(jobs):
        logger.info("%s: %d of %d samples already written, resuming", log, len(jobs) - len(todo), len(jobs))
    out.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8", newline="\n") as handle:
        for start in tqdm(range(0, len(todo), batch_size), desc="generated videos", disable=not progress):
            batch = todo[start : start + batch_size]
            with torch.no_grad():
                frames = pipe(
                    [job["prompt"] for job in batch],
                    **call,
                    generator=[torch.Generator().manual_seed(job["seed"]) for job in batch],
                    output_type="pt",
                ).frames
            for job, video in zip(batch, frames.float().clamp(0, 1)):
                write_video(
                    video, out / job["path"], fps=fps, options=ENCODER_OPTIONS, lossless=job["lossless"]
                )
                entry = {**job, "num_frames": int(video.shape[0])}
                handle.write(json.dumps(entry, sort_keys=True) + "\n")
                handle.flush()
                done[job["path"]] = entry
    return [done[job["path"]] for job in jobs]


def concatenate_pair_files(sources: Sequence[str | os.PathLike[str]], target: str | os.PathLike[str]) -> Path:
    """One pair file with the rows of several toy pair files; relative video paths are rewritten to resolve from the
    target's folder (unchanged when a source is in that folder)."""
    rows: list[dict[str, str]] = []
    target = Path(target)
    for source in sources:
        prefix = Path(os.path.relpath(Path(source).parent, target.parent))
        with open(source, encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                for key in ("path_A", "path_B"):
                    if not os.path.isabs(row[key]):
                        row[key] = (prefix / row[key]).as_posix()
                rows.append(row)
    return _write_pairs(target, rows)


def load_manifest(out_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The video records of a built dataset (``videos.jsonl``), with scenes as :class:`Scene` objects."""
    path = Path(out_dir) / "videos.jsonl"
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; is {out_dir} a toy dataset built by build_dataset?")
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            record["asked"] = Scene.from_dict(record["asked"])
            record["shown"] = Scene.from_dict(record["shown"])
            records.append(record)
    return records
