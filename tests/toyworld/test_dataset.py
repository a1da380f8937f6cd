"""The dataset builder: real pair-file formats, splits with held-out combinations, byte-identical by seed."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest
import torch

from descore.answer import DIMENSIONS, parse_answer
from descore.errors import ConfigError
from descore.pairs import PairFormat, load_pairs
from descore.video_io import read_video
from toyworld.dataset import (
    PAIR_COLUMNS,
    SPLITS,
    build_candidate_dataset,
    build_dataset,
    build_generated_dataset,
    concatenate_pair_files,
    held_out_combinations,
    load_manifest,
)
from toyworld.preferences import compare, utility
from toyworld.scene import WorldConfig


def _digest(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "data"
    summary = build_dataset(out, 30, seed=7, videos_per_prompt=3, progress=False)
    return out, summary


def test_same_seed_is_byte_identical_and_other_seeds_differ(built, tmp_path):
    out, _ = built
    again = tmp_path / "again"
    build_dataset(again, 30, seed=7, videos_per_prompt=3, progress=False)
    assert _digest(out) == _digest(again)
    other = tmp_path / "other"
    build_dataset(other, 30, seed=8, videos_per_prompt=3, progress=False)
    first, second = _digest(out), _digest(other)
    assert first.keys() == second.keys() and first["train.csv"] != second["train.csv"]
    assert not any(first[k] == second[k] for k in first if k.endswith(".mp4"))


def test_files_columns_and_splits(built):
    out, summary = built
    assert sorted(p.name for p in out.iterdir()) == [
        "test_id.csv",
        "test_ood.csv",
        "train.csv",
        "videos",
        "videos.jsonl",
        "world.json",
    ]
    assert summary.pairs == {"train": 24, "test_id": 3, "test_ood": 3}
    for split in SPLITS:
        with open(out / f"{split}.csv", newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            assert tuple(reader.fieldnames) == PAIR_COLUMNS
            rows = list(reader)
        assert len(rows) == summary.pairs[split]
        for row in rows:
            assert row["path_A"].startswith(f"videos/{split}/") and (out / row["path_B"]).is_file()
            assert row["path_A"] != row["path_B"] and row["A_model"] == "toyworld-render"
            assert (row["fps_A"], row["num_frames_A"]) == ("8", "9")
            assert {row[c] for c in ("VQ", "MQ", "TA", "Overall", *DIMENSIONS)} <= {"A", "B", "same"}
            assert {row[f"gt_{d}_{s}"] for d in DIMENSIONS for s in "AB"} <= {"0", "1", "2", "N/A"}
    world = json.loads((out / "world.json").read_text())
    assert world["seed"] == 7 and world["held_out"] == [list(c) for c in held_out_combinations(7)]


def test_labels_and_cots_agree_with_the_ground_truth(built):
    out, _ = built
    manifest = {r["path"]: r for r in load_manifest(out)}
    for split in SPLITS:
        data = load_pairs(out / f"{split}.csv")
        assert data.format is PairFormat.DESCORE and data.has_cot and data.has_subscores
        for pair in data:
            a, b = manifest[str(pair.video_a.relative_to(out))], manifest[str(pair.video_b.relative_to(out))]
            assert pair.gt_subscores_a == a["subscores"] and pair.gt_subscores_b == b["subscores"]
            expected = compare(utility(a["subscores"]), utility(b["subscores"]))
            assert pair.record["Overall"] == pair.record["TA"] == expected
            assert pair.record["style"] == pair.record["VQ"] and pair.record["dynamics"] == pair.record["MQ"]
            assert parse_answer(pair.cot_a).dimensional_scores == a["subscores"]


def test_out_of_domain_split_holds_the_held_out_combinations(built):
    out, summary = built
    held = set(summary.held_out)
    colours = {c for c, _ in held}
    assert len(held) == 7 and len(colours) == 7  # one held-out shape per colour
    by_split: dict[str, list] = {s: [] for s in SPLITS}
    for record in load_manifest(out):
        by_split[record["split"]].append(record)
    for split in ("train", "test_id"):
        for record in by_split[split]:
            for scene in (record["asked"], record["shown"]):
                assert not {(o.color, o.shape) for o in scene.spec.objects} & held
    assert by_split["test_ood"]
    for record in by_split["test_ood"]:
        assert {(o.color, o.shape) for o in record["asked"].spec.objects} & held


def test_videos_decode_with_the_configured_geometry(tmp_path):
    config = WorldConfig(num_frames=5, height=48, width=40, fps=4)
    build_dataset(tmp_path / "d", 3, seed=1, config=config, progress=False)
    video = read_video(next((tmp_path / "d" / "videos" / "train").glob("*.mp4")))
    assert tuple(video.frames.shape) == (5, 3, 48, 40) and round(video.source_fps) == 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"pairs": 0}, "positive integer"),
        ({"pairs": -3}, "positive integer"),
        ({"seed": -1}, "non-negative"),
        ({"split_fractions": (0.5, 0.5)}, "split fractions"),
        ({"split_fractions": (0.6, 0.6, -0.2)}, "split fractions"),
        ({"videos_per_prompt": 1}, "videos_per_prompt"),
        ({"label_noise": 2.0}, "label noise"),
        ({"cot_style": "long"}, "cot_style must be one of full, brief, track"),
    ],
)
def test_bad_arguments_raise_clear_errors(tmp_path, kwargs, message):
    args = {"pairs": 5, "seed": 0, **kwargs}
    with pytest.raises(ConfigError, match=message):
        build_dataset(tmp_path / "d", args.pop("pairs"), args.pop("seed"), progress=False, **args)
    assert not (tmp_path / "d").exists()


def test_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        build_dataset(tmp_path / "d", 3, seed=0, progress=False)
    build_dataset(tmp_path / "d", 3, seed=0, progress=False, overwrite=True)
    assert (tmp_path / "d" / "train.csv").is_file()


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Samples of the shipped toy generator (few steps: the pipeline's outputs, not their quality, matter here)."""
    from toyworld.generator import TOY_GENERATOR_CALL, WORLD, load_toy_generator, toy_prompts

    out = tmp_path_factory.mktemp("generated")
    pipe = load_toy_generator()
    pipe.set_progress_bar_config(disable=True)
    call = {**TOY_GENERATOR_CALL, "num_inference_steps": 4}
    prompts = toy_prompts(3, seed=5)
    summary = build_generated_dataset(
        out,
        pipe,
        prompts,
        2,
        call=call,
        fps=float(WORLD.fps),
        videos_per_prompt=3,
        test_fraction=0.34,
        progress=False,
    )
    return out, summary, prompts


def test_generated_pairs_are_labelled_by_the_analyzer(generated):
    from toyworld.analyzer import analyze

    out, summary, prompts = generated
    assert summary.pairs == {"train": 6, "test": 3} and summary.videos == 9
    records = {
        r["path"]: r for r in map(json.loads, (out / "generated_videos.jsonl").read_text().splitlines())
    }
    pairs = load_pairs(summary.pair_files["train"], dimension="Overall")
    assert len(pairs) == 6 and {p.prompt for p in pairs} == set(prompts[:2])
    for pair in pairs:
        for video, cot, truth in (
            (pair.video_a, pair.cot_a, pair.gt_subscores_a),
            (pair.video_b, pair.cot_b, pair.gt_subscores_b),
        ):
            analysis = analyze(video, pair.prompt)
            assert truth == {d: analysis.subscores[d] for d in DIMENSIONS}
            assert parse_answer(cot).dimensional_scores == truth
            for finding in analysis.findings:
                assert finding.partition(": ")[2] in cot
            assert records[str(video.relative_to(out))]["subscores"] == truth
        expected = compare(utility(pair.gt_subscores_a), utility(pair.gt_subscores_b))
        assert pair.labels["Overall"] == {"A": 1, "B": -1, "same": 0}[expected]


@pytest.mark.parametrize("lossless", [True, False])
def test_generated_videos_are_stored_losslessly(tmp_path, lossless):
    """The stored sample is the pipeline's output to the grey level (``lossless=False``: an H.264 copy, which is
    not)."""
    from toyworld.generator import TOY_GENERATOR_CALL, WORLD, load_toy_generator

    pipe = load_toy_generator()
    pipe.set_progress_bar_config(disable=True)
    call = {**TOY_GENERATOR_CALL, "num_inference_steps": 2}
    prompt = "a small red circle moving left in front of a plain navy background"
    build_generated_dataset(
        tmp_path,
        pipe,
        [prompt],
        3,
        call=call,
        fps=float(WORLD.fps),
        test_fraction=0.0,
        videos_per_prompt=2,
        lossless=lossless,
        progress=False,
    )
    records = [json.loads(line) for line in (tmp_path / "generated_videos.jsonl").read_text().splitlines()]
    generators = [torch.Generator().manual_seed(r["seed"]) for r in records]
    with torch.no_grad():  # the same batch as the dataset's, so the same numerics
        raw = pipe([prompt] * 2, **call, generator=generators, output_type="pt").frames.float().clamp(0, 1)
    for record, frames in zip(records, raw):
        stored = read_video(tmp_path / record["path"]).frames
        assert torch.equal((stored * 255).round(), (frames * 255).round()) == lossless


def test_generated_pair_files_concatenate_and_are_never_overwritten(generated):
    out, summary, _ = generated
    merged = concatenate_pair_files(
        [summary.pair_files["train"], summary.pair_files["test"]], out / "all.csv"
    )
    assert len(load_pairs(merged, dimension="Overall")) == 9
    with pytest.raises(ConfigError, match="already exist"):
        build_generated_dataset(out, None, ["a red circle"], 0, call={}, fps=8.0)


def _saved_candidates(out):
    """The generated fixture's samples as saved candidates: frames (prompts, candidates, T, 3, H, W) and seeds."""
    records = [json.loads(line) for line in (out / "generated_videos.jsonl").read_text().splitlines()]
    frames = np.stack([read_video(out / r["path"]).frames.numpy() for r in records]).reshape(
        3, 3, -1, 3, 48, 48
    )
    return frames, np.array([r["seed"] for r in records]).reshape(3, 3)


def test_candidate_pairs_equal_the_generated_pairs_of_the_same_samples(generated, tmp_path):
    """Samples made elsewhere (saved best-of-N candidates) are labelled, paired and split exactly like the
    generator's own: the same frames give the same pair files, and they concatenate from another folder."""
    out, summary, prompts = generated
    frames, seeds = _saved_candidates(out)
    candidates = build_candidate_dataset(
        tmp_path / "c", frames, prompts, seeds, fps=8.0, seed=2, test_fraction=0.34, progress=False
    )
    assert candidates.pairs == summary.pairs and candidates.videos == summary.videos
    for split in ("train", "test"):
        assert candidates.pair_files[split].read_text() == summary.pair_files[split].read_text()
    merged = concatenate_pair_files([candidates.pair_files["train"]], tmp_path / "all.csv")
    pairs = load_pairs(merged, dimension="Overall")  # checks that every video path resolves
    assert all(p.video_a.parent.parent.parent.parent.name == "c" for p in pairs)


def test_candidate_dataset_refuses_bad_frames(generated, tmp_path):
    out, _, prompts = generated
    frames, seeds = _saved_candidates(out)
    with pytest.raises(ConfigError, match=r"frames must be \(prompts, candidates, T, 3, H, W\)"):
        build_candidate_dataset(tmp_path / "a", frames[:, :2], prompts, seeds, fps=8.0)
    with pytest.raises(ConfigError, match="2 prompts for 3 groups"):
        build_candidate_dataset(tmp_path / "b", frames, prompts[:2], seeds, fps=8.0)
    with pytest.raises(ConfigError, match=r"frames must be in \[0, 1\]"):
        build_candidate_dataset(tmp_path / "c", frames * 255, prompts, seeds, fps=8.0)
    assert not (tmp_path / "c").exists()


def test_track_cots_answer_with_the_analyzers_verdict_of_the_rendered_frames(tmp_path):
    """``cot_style="track"``: every CoT starts with the asked objects' tracks and its answer is the analyzer's
    verdict on the rendered frames, while the pair labels and gt columns stay the ground truth."""
    from toyworld.analyzer import analyze
    from toyworld.render import render

    summary = build_dataset(tmp_path / "d", 6, seed=2, videos_per_prompt=3, cot_style="track", progress=False)
    records = load_manifest(tmp_path / "d")
    rendered = render([r["shown"] for r in records])
    for record, frames in zip(records, rendered):
        analysis = analyze(frames, record["prompt"])
        assert parse_answer(record["cot"]).dimensional_scores == analysis.subscores
        assert record["cot"].startswith(f"{record['asked'].spec.objects[0].color} ")
    pairs = load_pairs(summary.pair_files["train"], dimension="Overall")
    truth = {r["path"]: r["subscores"] for r in records}
    assert all(p.gt_subscores_a == truth[str(p.video_a.relative_to(tmp_path / "d"))] for p in pairs)


def test_generated_sampling_resumes_where_it_stopped(tmp_path):
    """An interrupted sampling run (here: the first prompt's samples written, the log's last line cut) continues:
    only the missing samples are made, and the pair files equal those of an uninterrupted run. A log made with
    other seeds is refused."""
    from toyworld.dataset import SAMPLING_LOG
    from toyworld.generator import TOY_GENERATOR_CALL, WORLD, load_toy_generator, toy_prompts

    pipe = load_toy_generator()
    pipe.set_progress_bar_config(disable=True)
    calls = []

    def counted(prompts, **kwargs):
        calls.append(len(prompts))
        return pipe(prompts, **kwargs)

    args = {
        "call": {**TOY_GENERATOR_CALL, "num_inference_steps": 2},
        "fps": float(WORLD.fps),
        "videos_per_prompt": 2,
        "test_fraction": 0.0,
        "batch_size": 2,
        "progress": False,
    }
    prompts = toy_prompts(2, seed=9)
    build_generated_dataset(tmp_path / "straight", counted, prompts, 1, **args)
    build_generated_dataset(
        tmp_path / "cut", counted, prompts[:1], 1, **args
    )  # the first prompt's two samples
    log = tmp_path / "cut" / SAMPLING_LOG
    log.write_text(log.read_text() + '{"path": "videos/gener')
    for name in ("generated_train.csv", "generated_test.csv"):
        (tmp_path / "cut" / name).unlink()
    calls.clear()
    build_generated_dataset(tmp_path / "cut", counted, prompts, 1, **args)
    assert calls == [2]  # only the second prompt's samples
    for name in ("generated_train.csv", "generated_videos.jsonl"):
        assert (tmp_path / "cut" / name).read_text() == (tmp_path / "straight" / name).read_text()
    for name in ("generated_train.csv", "generated_test.csv"):
        (tmp_path / "cut" / name).unlink()
    with pytest.raises(ConfigError, match="other prompts, seeds or storage"):
        build_generated_dataset(tmp_path / "cut", counted, prompts, 2, **args)


def test_generated_mirrors_add_labelled_views_of_training_samples(tmp_path):
    """Every view of a training sample is written (exactly the flipped frames), asked for by the mirrored prompt and
    labelled by the analyzer on the view; it pairs within its own group; the test split gets no views."""
    from toyworld.analyzer import analyze
    from toyworld.generator import TOY_GENERATOR_CALL, WORLD, load_toy_generator, toy_prompts
    from toyworld.mirror import MIRRORS, mirror_frames, mirror_spec
    from toyworld.prompts import parse_prompt

    prompts = toy_prompts(2, seed=4)
    args = {"call": {**TOY_GENERATOR_CALL, "num_inference_steps": 2}, "fps": float(WORLD.fps)}
    with pytest.raises(ConfigError, match="distinct views"):
        build_generated_dataset(tmp_path / "bad", None, prompts, 0, mirrors=("hflip", "vflip"), **args)
    summary = build_generated_dataset(
        tmp_path,
        load_toy_generator(),
        prompts,
        3,
        videos_per_prompt=2,
        test_fraction=0.5,
        mirrors=MIRRORS,
        progress=False,
        **args,
    )
    assert summary.pairs == {"train": 4, "test": 1} and summary.videos == 2 * 4 + 2
    records = [json.loads(line) for line in (tmp_path / "generated_videos.jsonl").read_text().splitlines()]
    by_path = {r["path"]: r for r in records}
    pairs = load_pairs(summary.pair_files["train"], dimension="Overall")
    assert len({p.prompt for p in pairs}) == 4
    for view in MIRRORS:
        for k in range(2):
            original = by_path[f"videos/generated/train/00000_{k}.mp4"]
            record = by_path[f"videos/generated/train/00000_{k}_{view}.mp4"]
            assert parse_prompt(record["prompt"]) == mirror_spec(parse_prompt(original["prompt"]), view)
            frames = read_video(tmp_path / record["path"]).frames
            assert torch.equal(frames, mirror_frames(read_video(tmp_path / original["path"]).frames, view))
            analysis = analyze(tmp_path / record["path"], record["prompt"])
            assert record["subscores"] == {d: analysis.subscores[d] for d in DIMENSIONS}
            assert parse_answer(record["cot"]).dimensional_scores == record["subscores"]
    for pair in pairs:
        assert by_path[str(pair.video_a.relative_to(tmp_path))]["prompt"] == pair.prompt
        assert by_path[str(pair.video_b.relative_to(tmp_path))]["prompt"] == pair.prompt
    assert [r["path"] for r in records if r["split"] == "test"] == [
        f"videos/generated/test/00001_{k}.mp4" for k in (0, 1)
    ]
