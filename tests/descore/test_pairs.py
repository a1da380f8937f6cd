"""Pair files: the three layouts in CSV and JSONL, validation that reports every problem, dataset helpers, writer."""

import csv
import json
from pathlib import Path

import pytest

from descore.errors import ConfigError, DataError
from descore.pairs import PairDataset, PairFormat, PairLabel, load_pairs, write_pair_results

VIDEOALIGN_HEADER = [
    "path_A", "path_B", "prompt", "A_model", "B_model", "fps_A", "num_frames_A", "fps_B", "num_frames_B",
    "VQ", "MQ", "TA", "Overall",
]  # fmt: skip
GT = [f"gt_{d}_{s}" for s in "AB" for d in ("subject", "dynamics", "camera", "environment", "style")]


def _videos(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x00\x00\x00\x18ftypmp42")


def _csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def videoalign_csv(tmp_path: Path) -> Path:
    _videos(tmp_path, "videos/a.mp4", "videos/b.mp4", "videos/c.mp4")
    rows = [
        ["videos/a.mp4", "videos/b.mp4", "a cat", "m1", "m2", "8", "16", "8.0", "16", "A", "B", "same", "A"],
        ["videos/b.mp4", "videos/c.mp4", "a cat", "m2", "m3", "", "", "2", "10", "same", "same", "B", "b"],
        ["videos/a.mp4", "videos/c.mp4", "a dog", "m1", "m3", "8", "16", "8", "16", "B", "A", "A", "Same"],
    ]
    return _csv(tmp_path / "pairs.csv", VIDEOALIGN_HEADER, rows)


def test_videoalign_csv_is_detected_and_parsed(videoalign_csv: Path):
    data = load_pairs(videoalign_csv)
    assert data.format is PairFormat.VIDEOALIGN and len(data) == 3
    assert data.dimensions == ("VQ", "MQ", "TA", "Overall")
    first, second = data[0], data[1]
    assert first.video_a == videoalign_csv.parent / "videos" / "a.mp4" and first.video_a.is_absolute()
    assert first.labels == {"VQ": PairLabel.A, "MQ": PairLabel.B, "TA": PairLabel.TIE, "Overall": PairLabel.A}
    assert (first.fps_a, first.num_frames_a, first.model_a, first.model_b) == (8.0, 16, "m1", "m2")
    assert second.fps_a is None and second.num_frames_b == 10
    assert second.labels["Overall"] == PairLabel.B
    assert first.cot_a is None and first.gt_subscores_a is None
    assert [p.line for p in data] == [2, 3, 4]
    assert not data.has_cot and not data.has_subscores


def test_dataset_helpers(videoalign_csv: Path):
    data = load_pairs(videoalign_csv)
    assert [v.name for v in data.videos()] == ["a.mp4", "b.mp4", "c.mp4"]
    assert data.labels("TA") == [PairLabel.TIE, PairLabel.B, PairLabel.A]
    no_ties = data.drop_ties("Overall")
    assert isinstance(no_ties, PairDataset) and [p.line for p in no_ties] == [2, 3]
    assert [p.line for p in data.filter(lambda p: p.prompt == "a dog")] == [4]
    assert [p.line for p in data[1:]] == [3, 4] and data[1:].dimensions == data.dimensions
    with pytest.raises(ConfigError, match=r"no label column 'subject'.*\['VQ', 'MQ', 'TA', 'Overall'\]"):
        data.labels("subject")


def test_video_root_and_absolute_paths(tmp_path: Path):
    _videos(tmp_path, "store/a.mp4", "store/b.mp4")
    absolute = str(tmp_path / "store" / "b.mp4")
    path = _csv(tmp_path / "p.csv", ["path_A", "path_B", "prompt", "TA"], [["a.mp4", absolute, "p", "A"]])
    data = load_pairs(path, video_root=tmp_path / "store")
    assert data[0].video_a == tmp_path / "store" / "a.mp4" and str(data[0].video_b) == absolute


def test_genai_bench_csv(tmp_path: Path):
    _videos(tmp_path, "l.mp4", "r.mp4")
    header = ["prompt", "left_model", "right_model", "vote_type", "left_video_path", "right_video_path"]
    votes = ["leftvote", "rightvote", "tievote", "bothbad_vote"]
    path = _csv(tmp_path / "genai.csv", header, [["p", "L", "R", v, "l.mp4", "r.mp4"] for v in votes])
    data = load_pairs(path)
    assert data.format is PairFormat.GENAI_BENCH and data.dimensions == ("Overall",)
    assert data.labels("Overall") == [PairLabel.A, PairLabel.B, PairLabel.TIE, PairLabel.TIE]
    assert data[0].video_a.name == "l.mp4" and (data[0].model_a, data[0].model_b) == ("L", "R")


def _descore_row(a: str, b: str, cot_a: str, gts: list[str], labels: list[str]) -> list[str]:
    return [a, b, "a red ball rolls", cot_a, "cot B", *gts, *labels]


def test_descore_csv_with_multiline_cot_and_subscores(tmp_path: Path):
    _videos(tmp_path, "a.mp4", "b.mp4")
    dims = ["subject", "dynamics", "camera", "environment", "style", "Overall"]
    header = ["path_A", "path_B", "prompt", "CoT_A", "CoT_B", *GT, *dims]
    gts = ["2", "1", "N/A", "2", "0", "2", "2", "2", "2", "2"]
    rows = [
        _descore_row("a.mp4", "b.mp4", "line one\nline two\n<answer>{}</answer>", gts, ["B", "B", "same", "same", "B", "B"]),
        _descore_row("b.mp4", "a.mp4", "short", gts, ["A", "same", "same", "same", "A", "A"]),
    ]  # fmt: skip
    data = load_pairs(_csv(tmp_path / "d.csv", header, rows))
    assert data.format is PairFormat.DESCORE and data.has_cot and data.has_subscores
    assert data.dimensions == ("Overall", "subject", "dynamics", "camera", "environment", "style")
    first = data[0]
    assert first.cot_a.startswith("line one\nline two") and first.cot_b == "cot B"
    assert first.gt_subscores_a == {"subject": 2, "dynamics": 1, "camera": None, "environment": 2, "style": 0}
    assert first.gt_subscores_b["camera"] == 2
    assert [p.line for p in data] == [2, 5]  # the first record spans three physical lines


def test_jsonl_with_the_same_keys(tmp_path: Path):
    _videos(tmp_path, "a.mp4", "b.mp4")
    gt = {c: 2 for c in GT} | {"gt_camera_A": None, "gt_style_B": "N/A"}
    records = [
        {"path_A": "a.mp4", "path_B": "b.mp4", "prompt": "p", "CoT_A": "x", "CoT_B": "y", "Overall": "A", **gt,
         "fps_A": 2, "num_frames_A": 8},
        {"path_A": "b.mp4", "path_B": "a.mp4", "prompt": "p", "CoT_A": "x", "CoT_B": "y", "Overall": "same", **gt},
    ]  # fmt: skip
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(records[0]) + "\n\n" + json.dumps(records[1]) + "\n", encoding="utf-8")
    data = load_pairs(path)
    assert data.format is PairFormat.DESCORE and [p.line for p in data] == [1, 3]
    assert data[0].gt_subscores_a["camera"] is None and data[0].gt_subscores_b["style"] is None
    assert (data[0].fps_a, data[0].num_frames_a) == (2.0, 8)
    assert data.labels("Overall") == [PairLabel.A, PairLabel.TIE]


def test_explicit_format_and_unknown_format(videoalign_csv: Path):
    with pytest.raises(DataError, match=r"missing column\(s\) \['CoT_A', 'CoT_B'\].*the file has \['path_A'"):
        load_pairs(videoalign_csv, format="descore")
    with pytest.raises(ConfigError, match="unknown pair-file format 'csv'"):
        load_pairs(videoalign_csv, format="csv")
    assert load_pairs(videoalign_csv, format=PairFormat.VIDEOALIGN, label_columns=["TA"]).dimensions == (
        "TA",
    )


def test_missing_required_columns_are_named(tmp_path: Path):
    path = _csv(tmp_path / "p.csv", ["path_A", "path_B", "caption", "TA"], [["a", "b", "c", "A"]])
    with pytest.raises(DataError) as info:
        load_pairs(path)
    assert "missing column(s) ['prompt']" in str(info.value)
    assert "'caption'" in str(info.value)
    unknown = _csv(tmp_path / "q.csv", ["video", "text"], [["a", "b"]])
    with pytest.raises(DataError, match="cannot tell the format from the columns"):
        load_pairs(unknown)
    no_labels = _csv(tmp_path / "r.csv", ["path_A", "path_B", "prompt"], [["a", "b", "c"]])
    with pytest.raises(DataError, match="no label column"):
        load_pairs(no_labels)


def test_every_row_problem_is_reported_at_once(tmp_path: Path):
    _videos(tmp_path, "a.mp4", "b.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    header = ["path_A", "path_B", "prompt", "fps_A", *GT, "Overall"]
    ok_gt = ["2"] * 10
    rows = [
        ["a.mp4", "b.mp4", "p", "8", *ok_gt, "A"],
        ["a.mp4", "missing.mp4", "p", "8", *ok_gt, "left"],
        ["empty.mp4", "b.mp4", "", "fast", *ok_gt, "B"],
        ["a.mp4", "b.mp4", "p", "8", "3", *ok_gt[1:], "B"],
        ["a.mp4", "b.mp4", "p"],
    ]
    path = _csv(tmp_path / "bad.csv", header, rows)
    with pytest.raises(DataError) as info:
        load_pairs(path)
    problems = info.value.problems
    text = "\n".join(problems)
    assert info.value.source == str(path)
    assert "line 3: Overall = 'left'; expected A, B or same" in text
    assert f"video not found: {tmp_path / 'missing.mp4'} (line 3)" in text
    assert f"video file is empty: {tmp_path / 'empty.mp4'} (line 4)" in text
    assert "line 4: prompt is empty" in text
    assert "line 4: fps_A: expected a positive number, got 'fast'" in text
    assert "line 5: gt_subject_A = '3'" in text
    assert "line 6: 3 field(s), the header has 15" in text
    assert len(problems) == 7


def test_missing_videos_list_every_line_once_per_video_and_skip_flag(tmp_path: Path):
    rows = [["gone.mp4", "x.mp4", "p", "A"], ["gone.mp4", "y.mp4", "p", "B"]]
    path = _csv(tmp_path / "p.csv", ["path_A", "path_B", "prompt", "TA"], rows)
    with pytest.raises(DataError) as info:
        load_pairs(path)
    assert f"video not found: {tmp_path / 'gone.mp4'} (line 2, 3)" in info.value.problems
    assert len(load_pairs(path, check_videos=False)) == 2


def test_long_problem_lists_are_summarised(tmp_path: Path):
    rows = [[f"v{i}.mp4", "w.mp4", "p", "A"] for i in range(30)]
    path = _csv(tmp_path / "p.csv", ["path_A", "path_B", "prompt", "TA"], rows)
    with pytest.raises(DataError) as info:
        load_pairs(path)
    assert len(info.value.problems) == 21
    assert info.value.problems[-1] == "... and 11 more problem(s) of this kind: missing video"


def test_empty_and_header_only_files(tmp_path: Path):
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="the file is empty"):
        load_pairs(empty)
    header_only = _csv(tmp_path / "h.csv", ["path_A", "path_B", "prompt", "TA"], [])
    with pytest.raises(DataError, match="no pairs"):
        load_pairs(header_only)
    with pytest.raises(DataError, match="file not found"):
        load_pairs(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="unsupported file type '.parquet'"):
        (tmp_path / "x.parquet").write_text("x")
        load_pairs(tmp_path / "x.parquet")


def test_unreadable_json_lines_are_all_reported(tmp_path: Path):
    _videos(tmp_path, "a.mp4", "b.mp4")
    path = tmp_path / "p.jsonl"
    good = json.dumps({"path_A": "a.mp4", "path_B": "b.mp4", "prompt": "p", "TA": "A"})
    path.write_text(f"{good}\n{{not json\n[1, 2]\n{good}\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_pairs(path)
    assert len(info.value.problems) == 2
    assert info.value.problems[0].startswith("line 2: not valid JSON")
    assert info.value.problems[1] == "line 3: expected a JSON object, got list"
    only_bad = tmp_path / "q.jsonl"
    only_bad.write_text("{oops\n", encoding="utf-8")
    with pytest.raises(DataError, match="no readable record"):
        load_pairs(only_bad)


def test_jsonl_record_missing_a_key(tmp_path: Path):
    _videos(tmp_path, "a.mp4", "b.mp4")
    records = [
        {"path_A": "a.mp4", "path_B": "b.mp4", "prompt": "p", "TA": "A"},
        {"path_A": "a.mp4", "prompt": "p", "TA": "B"},
        {"path_A": "a.mp4", "path_B": "b.mp4", "prompt": "p"},
    ]
    with pytest.raises(DataError) as info:
        load_pairs(_jsonl(tmp_path / "p.jsonl", records))
    assert info.value.problems == ["line 2: missing key(s) ['path_B']", "line 3: missing label 'TA'"]


def test_require_non_tie(tmp_path: Path):
    _videos(tmp_path, "a.mp4", "b.mp4")
    rows = [["a.mp4", "b.mp4", "p", "same", "A"], ["b.mp4", "a.mp4", "p", "same", "same"]]
    path = _csv(tmp_path / "p.csv", ["path_A", "path_B", "prompt", "TA", "Overall"], rows)
    with pytest.raises(DataError, match="every one of the 2 pairs is a tie on 'TA'"):
        load_pairs(path, dimension="TA", require_non_tie=True)
    assert len(load_pairs(path, dimension="Overall", require_non_tie=True)) == 2
    with pytest.raises(ConfigError, match="require_non_tie needs `dimension`"):
        load_pairs(path, require_non_tie=True)
    with pytest.raises(DataError, match=r"missing label column\(s\) \['MQ'\]"):
        load_pairs(path, dimension="MQ")
    single = _csv(tmp_path / "s.csv", ["path_A", "path_B", "prompt", "TA"], [rows[0][:4]])
    with pytest.raises(DataError, match="tie on 'TA'"):
        load_pairs(single, require_non_tie=True)


def test_dimension_outside_the_known_label_columns(tmp_path: Path):
    _videos(tmp_path, "a.mp4", "b.mp4")
    path = _csv(
        tmp_path / "p.csv", ["path_A", "path_B", "prompt", "preference"], [["a.mp4", "b.mp4", "p", "B"]]
    )
    data = load_pairs(path, dimension="preference", require_non_tie=True)
    assert data.labels("preference") == [PairLabel.B]


def test_descore_format_requires_a_cot_in_every_row(tmp_path: Path):
    _videos(tmp_path, "a.mp4", "b.mp4")
    path = _csv(
        tmp_path / "p.csv",
        ["path_A", "path_B", "prompt", "CoT_A", "CoT_B", "TA"],
        [["a.mp4", "b.mp4", "p", "x", " ", "A"]],
    )
    with pytest.raises(DataError, match="line 2: CoT_B is empty"):
        load_pairs(path)


def test_incomplete_subscore_columns(tmp_path: Path):
    path = _csv(
        tmp_path / "p.csv", ["path_A", "path_B", "prompt", "TA", "gt_subject_A"], [["a", "b", "p", "A", "2"]]
    )
    with pytest.raises(DataError, match="ground-truth sub-score columns incomplete"):
        load_pairs(path)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_results_writer_round_trip(videoalign_csv: Path, tmp_path: Path, suffix: str):
    data = load_pairs(videoalign_csv)
    out = write_pair_results(
        tmp_path / "out" / f"results{suffix}", data, [0.5, 1.25, -3.0], [1.0, 0.0, 2.0],
        cots_a=["ca0", "ca1", "ca2"], cots_b=["cb0", "cb1", "cb2"],
    )  # fmt: skip
    assert not list(out.parent.glob(".*tmp"))
    back = load_pairs(out)
    assert back.format is PairFormat.DESCORE and len(back) == 3
    assert [(p.video_a, p.video_b) for p in back] == [(p.video_a, p.video_b) for p in data]
    assert back[1].cot_a == "ca1" and back[2].cot_b == "cb2"
    assert float(back[1].record["Reward_A"]) == 1.25 and float(back[2].record["Reward_B"]) == 2.0
    assert back.labels("TA") == data.labels("TA")
    if suffix == ".csv":
        header = out.read_text().splitlines()[0].split(",")
        assert header == VIDEOALIGN_HEADER + ["Reward_A", "Reward_B", "CoT_A", "CoT_B"]
    else:
        first = json.loads(out.read_text().splitlines()[0])
        assert first["Reward_A"] == 0.5 and first["fps_A"] == "8"


def test_results_writer_overwrites_existing_columns_in_place(tmp_path: Path):
    _videos(tmp_path, "a.mp4", "b.mp4")
    path = _csv(
        tmp_path / "p.csv",
        ["path_A", "path_B", "prompt", "CoT_A", "CoT_B", "TA"],
        [["a.mp4", "b.mp4", "p", "x", "y", "A"]],
    )
    out = write_pair_results(
        tmp_path / "r.csv", load_pairs(path), [1.0], [2.0], cots_a=["new"], extra_columns={"note": ["n"]}
    )
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == [
        "path_A",
        "path_B",
        "prompt",
        "CoT_A",
        "CoT_B",
        "TA",
        "Reward_A",
        "Reward_B",
        "note",
    ]
    assert (rows[0]["CoT_A"], rows[0]["CoT_B"], rows[0]["note"]) == ("new", "y", "n")


def test_results_writer_rejects_wrong_lengths_and_suffixes(videoalign_csv: Path, tmp_path: Path):
    data = load_pairs(videoalign_csv)
    with pytest.raises(DataError, match=r"Reward_B has 2 value\(s\), expected one per pair \(3\)"):
        write_pair_results(tmp_path / "r.csv", data, [1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(DataError, match="unsupported file type"):
        write_pair_results(tmp_path / "r.txt", data, [1.0] * 3, [1.0] * 3)
    assert not (tmp_path / "r.csv").exists()
