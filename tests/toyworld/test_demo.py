"""The demo end to end on freshly built (untrained) toy models: report content and pick logic."""

from __future__ import annotations

import html
import re

import pytest
import torch

from descore.cli import main
from descore.scoring import DeScore
from toyworld.demo import FEW_PROMPTS_NOTE, render_html, run_demo, summary
from toyworld.generator import build_toy_generator
from toyworld.tiny_models import build_qwen_vl, build_qwen_vl_processor


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    build_toy_generator(0).save_pretrained(root / "generator")
    scorer = DeScore.from_backbone(
        build_qwen_vl("qwen3_vl", "tiny", seed=0),
        build_qwen_vl_processor("qwen3_vl", "tiny"),
        seed=0,
        sampling={"fps": 8.0, "min_frames": 2, "max_frames": 9, "min_pixels": 32 * 32, "max_pixels": 64 * 64},
        generation={"max_new_tokens": 8},
    )
    scorer.save_pretrained(root / "descore")
    return root


def test_demo_report(checkpoints):
    report = run_demo(
        num_prompts=2,
        num_candidates=3,
        guidance_prompts=1,
        progress=False,
        generator_path=checkpoints / "generator",
        reward_model_path=checkpoints / "descore",
    )
    assert len(report.results) == 2 and all(len(r.candidates) == 3 for r in report.results)
    for r in report.results:
        rewards = torch.tensor([c.reward for c in r.candidates])
        assert r.winner == int(rewards.argmax())
        assert all(c.cot is not None and c.gif.startswith(b"GIF8") for c in r.candidates)
    stats = summary(report)
    assert (
        min(c.truth for r in report.results for c in r.candidates)
        <= stats["descore_pick"]
        <= stats["best_candidate"]
    )
    page = render_html(report)
    assert len(re.findall(r'src="data:image/gif;base64,', page)) == 2 * 3 + 2
    assert "rationale" in page and "guidance" in page


def test_demo_cli_writes_a_self_contained_page(checkpoints, tmp_path, capsys):
    code = main(
        [
            "demo",
            "--out",
            str(tmp_path),
            "--prompts",
            "1",
            "--candidates",
            "2",
            "--guidance-prompts",
            "0",
            "--generator",
            str(checkpoints / "generator"),
            "--reward-model",
            str(checkpoints / "descore"),
        ]
    )
    assert code == 0
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "http" not in page
    printed = capsys.readouterr().out
    assert "DeScore's pick scores" in printed and FEW_PROMPTS_NOTE in printed
    assert html.escape(FEW_PROMPTS_NOTE) in page  # a handful of prompts is not the measurement, and says so


def test_demo_names_missing_checkpoints(tmp_path, capsys):
    args = ["--generator", str(tmp_path / "nowhere"), "--reward-model", str(tmp_path / "none")]
    code = main(["demo", "--out", str(tmp_path), *args])
    assert code == 2
    assert "none: not a directory" in capsys.readouterr().err
