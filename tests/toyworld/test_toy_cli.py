"""`descore toy` through the descore command line."""

from __future__ import annotations

import json

from descore.answer import DIMENSIONS
from descore.cli import main


def test_build_writes_a_dataset(tmp_path, capsys):
    out = tmp_path / "toy"
    assert (
        main(
            [
                "toy",
                "build",
                "--out",
                str(out),
                "--pairs",
                "6",
                "--seed",
                "3",
                "--quiet",
                "--videos-per-prompt",
                "3",
                "--frames",
                "5",
            ]
        )
        == 0
    )
    assert "wrote 6 pairs" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} >= {"train.csv", "test_id.csv", "test_ood.csv", "videos.jsonl"}
    assert json.loads((out / "world.json").read_text())["config"]["num_frames"] == 5


def test_build_reports_bad_input(tmp_path, capsys):
    assert main(["toy", "build", "--out", str(tmp_path / "a"), "--pairs", "0", "--seed", "1"]) == 2
    assert "number of pairs must be a positive integer" in capsys.readouterr().err
    assert (
        main(["toy", "build", "--out", str(tmp_path / "b"), "--pairs", "4", "--seed", "1", "--height", "8"])
        == 2
    )
    assert "height must be an integer" in capsys.readouterr().err


def test_render_then_analyze_agree(tmp_path, capsys):
    video = tmp_path / "clip.mp4"
    prompt = "a big red circle moving left on a striped gray background, static camera"
    assert (
        main(
            [
                "toy",
                "render",
                prompt,
                "--out",
                str(video),
                "--defect",
                "wrong_direction:0:0:up",
                "--defect",
                "shake",
            ]
        )
        == 0
    )
    truth = json.loads(capsys.readouterr().out.split("ground truth: ")[1])
    assert truth == {**dict.fromkeys(DIMENSIONS, 2), "dynamics": 0, "camera": 1}
    assert main(["toy", "analyze", str(video), "--prompt", prompt, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["subscores"] == truth and report["objects"][0]["motion"] == "up"
    assert main(["toy", "analyze", str(video), "--prompt", prompt]) == 0
    assert "dynamics: the red circle is moving up" in capsys.readouterr().out


def test_render_and_analyze_report_bad_input(tmp_path, capsys):
    assert (
        main(
            ["toy", "render", "a red blob moving left on a gray background", "--out", str(tmp_path / "x.mp4")]
        )
        == 2
    )
    assert "no shape" in capsys.readouterr().err
    assert main(["toy", "analyze", str(tmp_path / "missing.mp4"), "--prompt", "x"]) == 2
    assert "no such file" in capsys.readouterr().err
