"""Chain-of-thought annotations: three stages, varied phrasing, an answer block that parses to the truth."""

from __future__ import annotations

import re

import numpy as np

from descore.answer import overall_from_subscores, parse_answer
from toyworld.analyzer import analyze
from toyworld.annotator import annotate_cot, annotate_track, track_text
from toyworld.defects import Defect, apply_defects, ground_truth, sample_defects
from toyworld.prompts import write_prompt
from toyworld.render import render
from toyworld.scene import ObjectSpec, Scene, SceneSpec, sample_scene


def _samples(count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        scene = sample_scene(rng)
        defects = sample_defects(scene, rng)
        yield write_prompt(scene.spec, rng), scene, defects, rng


def test_cot_parses_back_to_the_ground_truth():
    for prompt, scene, defects, rng in _samples(300):
        scores = ground_truth(scene, defects)
        for brief in (False, True):
            cot = annotate_cot(prompt, apply_defects(scene, defects), scores, rng, brief=brief)
            answer = parse_answer(cot)
            assert answer is not None and answer.dimensional_scores == scores
            assert answer.overall_score == overall_from_subscores(scores)
            assert cot.rstrip().endswith("</answer>")


def test_cot_follows_the_three_stages_and_names_the_flaws():
    spec = SceneSpec(
        objects=(ObjectSpec("circle", "red", "large", "left"),),
        background="gray",
        texture="striped",
        camera="static",
    )
    scene = Scene(spec=spec, centers=((0.6, 0.5),), seed=1)
    prompt = "A large red circle moving left on a striped gray background, static camera."
    defects = [
        Defect("wrong_color", 0, 0, "blue"),
        Defect("flicker", 0),
        Defect("unwanted_pan", 0, None, "pan_left"),
    ]
    cot = annotate_cot(
        prompt, apply_defects(scene, defects), ground_truth(scene, defects), np.random.default_rng(0)
    )
    lines = cot.splitlines()
    # Stage titles, then expectations, observations and one rating per dimension, in order.
    assert len(lines) == 12
    assert "red" in lines[1] and "striped gray background" in lines[1]
    assert "blue" in lines[3] and "strong brightness flicker" in lines[3]
    ratings = {line.split(":")[0].lower(): line for line in lines[5:10]}
    assert list(ratings) == ["subject", "dynamics", "camera", "environment", "style"]
    scores = {d: re.search(r"-> (?:a )?(\d)", line).group(1) for d, line in ratings.items()}
    assert scores == {"subject": "0", "dynamics": "2", "camera": "0", "environment": "2", "style": "0"}
    assert "blue instead of red" in ratings["subject"]
    assert "panning left instead of static" in ratings["camera"]
    assert "strong flicker" in ratings["style"]
    assert "one primary dimension fails" in lines[10]


def test_camera_not_asked_is_not_applicable():
    spec = SceneSpec(objects=(ObjectSpec("bar", "green", "small", "up"),), background="black")
    scene = Scene(spec=spec, centers=((0.5, 0.5),), seed=2)
    cot = annotate_cot(
        "A small green bar rising on a black background.",
        scene,
        ground_truth(scene, []),
        np.random.default_rng(1),
    )
    assert '"camera": "N/A"' in cot and "Camera: not applicable" in cot
    assert parse_answer(cot).overall_score == 5.0


def test_phrasing_varies():
    prompt, scene, defects, _ = next(_samples(1, seed=3))
    shown, scores = apply_defects(scene, defects), ground_truth(scene, defects)
    texts = {annotate_cot(prompt, shown, scores, np.random.default_rng(k)) for k in range(12)}
    assert len(texts) >= 10
    answers = {parse_answer(t).dimensional_scores == scores for t in texts}
    assert answers == {True}


def test_track_text_writes_one_cell_per_temporal_slice():
    nan = float("nan")
    positions = [(0.05, 0.95), (0.15, 0.85), (0.5, 0.5), (0.52, 0.5), (nan, nan), (nan, nan), (0.99, 0.0)]
    assert track_text(positions) == "19 55 -- 90"
    assert track_text(positions, frames_per_slice=3) == "27 55 90"
    assert track_text([(1.0, -0.1)]) == "90"  # the frame's edge stays on the grid


def test_track_cot_reads_the_analyzer_and_answers_with_its_verdict():
    """From rendered clips with defects: the answer block is the analyzer's verdict, each asked object's line
    starts with its track, and the same measurement always gives the same text."""
    for prompt, scene, defects, _ in _samples(40, seed=3):
        analysis = analyze(render([apply_defects(scene, defects)])[0], prompt)
        cot = annotate_track(analysis, prompt)
        assert cot == annotate_track(analysis, prompt)
        answer = parse_answer(cot)
        assert answer.dimensional_scores == analysis.subscores and answer.overall_score == analysis.overall
        observation, _, _ = cot.partition("\n")
        for obj in scene.spec.objects:
            line = re.search(rf"{obj.color} {obj.shape}: ([^,.]*)", observation)
            assert line and (
                line.group(1) == "missing" or re.fullmatch(r"(\d\d|--)( (\d\d|--)){4}", line.group(1))
            )
        assert re.search(r"background \w+ \w+ vs \w+ \w+\. camera", observation)
