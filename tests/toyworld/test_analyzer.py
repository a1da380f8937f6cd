"""The pixel analyzer agrees with the ground truth, on raw renders and on decoded mp4 files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from descore.answer import DIMENSIONS
from descore.errors import ConfigError, VideoError
from descore.video_io import read_video, write_video
from toyworld.analyzer import analyze
from toyworld.defects import Defect, apply_defects, ground_truth, sample_defects
from toyworld.prompts import write_prompt
from toyworld.render import render
from toyworld.scene import ObjectSpec, Scene, SceneSpec, sample_scene

TARGET = 0.95
MP4_VIDEOS = 120


@pytest.fixture(scope="module")
def fresh_videos():
    """500 videos drawn like the dataset draws them (seed unused during calibration), with their ground truth."""
    rng = np.random.default_rng(20240611)
    asked = [sample_scene(rng) for _ in range(500)]
    defects = [sample_defects(scene, rng) for scene in asked]
    shown = [apply_defects(scene, d) for scene, d in zip(asked, defects)]
    truth = [ground_truth(scene, d) for scene, d in zip(asked, defects)]
    prompts = [write_prompt(scene.spec, rng) for scene in asked]
    videos = render(shown)
    return videos, prompts, truth, shown, [analyze(v, p) for v, p in zip(videos, prompts)]


def _agreement(results, truth) -> dict[str, float]:
    return {d: float(np.mean([r.subscores[d] == t[d] for r, t in zip(results, truth)])) for d in DIMENSIONS}


def test_agreement_on_500_rendered_videos(fresh_videos):
    _, _, truth, _, results = fresh_videos
    agreement = _agreement(results, truth)
    assert min(agreement.values()) >= TARGET, agreement


def test_agreement_after_an_mp4_round_trip(fresh_videos, tmp_path):
    videos, prompts, truth, _, _ = fresh_videos
    decoded = []
    for k, (video, prompt) in enumerate(zip(videos[:MP4_VIDEOS], prompts)):
        path = write_video(video, tmp_path / f"{k}.mp4", fps=8)
        decoded.append(analyze(read_video(path).frames, prompt))
    agreement = _agreement(decoded, truth[:MP4_VIDEOS])
    assert min(agreement.values()) >= TARGET, agreement


def test_detected_attributes_match_clean_scenes(fresh_videos):
    _, _, _, shown, results = fresh_videos
    checked = correct = 0
    for result, scene in zip(results, shown):
        effects = scene.effects
        if effects.blur or effects.noise or effects.flicker:
            continue
        assert result.background == scene.spec.background
        assert result.texture == scene.spec.texture
        assert result.camera == (scene.spec.camera or "static")
        found = {o.color: o for o in result.objects}
        for i, obj in enumerate(scene.spec.objects):
            eff = effects.for_object(i)
            if not eff.visible or eff.split:
                continue
            checked += 1
            det = found[obj.color]
            correct += (det.shape, det.size, det.motion) == (obj.shape, obj.size, obj.motion)
    assert checked > 200 and correct / checked >= 0.97


def test_defects_are_found_and_named():
    spec = SceneSpec(
        objects=(ObjectSpec("triangle", "yellow", "large", "up"),),
        background="navy",
        texture="checkered",
        camera="pan_right",
    )
    scene = Scene(spec=spec, centers=((0.6, 0.55),), seed=4)
    prompt = "A large yellow triangle rising on a checkered navy background, the camera pans right."
    clean = analyze(render([scene])[0], prompt)
    assert clean.subscores == dict.fromkeys(DIMENSIONS, 2) and clean.overall == 5.0 and not clean.findings
    defects = [Defect("wrong_direction", 0, 0, "left"), Defect("missing_pan", 0), Defect("noise", 1)]
    result = analyze(render([apply_defects(scene, defects)])[0], prompt)
    assert result.subscores == ground_truth(scene, defects)
    assert result.camera == "static" and result.objects[0].motion == "left"
    assert any("moving left" in f for f in result.findings) and any(
        "mild noise" in f for f in result.findings
    )


def test_input_forms_agree(tmp_path):
    scene = sample_scene(np.random.default_rng(8))
    prompt = write_prompt(scene.spec, np.random.default_rng(8))
    video = render([scene])[0]
    expected = analyze(video, prompt).subscores
    assert analyze(torch.from_numpy(video), prompt).subscores == expected
    channels_last = (video.transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)
    assert analyze(channels_last, prompt).subscores == expected
    path = write_video(video, tmp_path / "v.mp4", fps=8)
    assert analyze(path, prompt).subscores == expected
    assert analyze(str(path), scene.spec).subscores == expected


def test_bad_inputs_raise_clear_errors(tmp_path):
    video = render([sample_scene(np.random.default_rng(1))])[0]
    with pytest.raises(ConfigError, match="no shape"):
        analyze(video, "a red blob moving left on a gray background")
    with pytest.raises(VideoError, match="at least 2 frames"):
        analyze(video[:1], "a red circle moving left on a gray background")
    with pytest.raises(VideoError, match="16x16"):
        analyze(np.zeros((4, 3, 8, 8), dtype=np.float32), "a red circle moving left on a gray background")
    with pytest.raises(VideoError, match="no such file"):
        analyze(tmp_path / "missing.mp4", "a red circle moving left on a gray background")


def test_objects_carry_their_track_in_the_image():
    """Per frame, the centroid as fractions of the frame: a square moving right on a still camera keeps its height
    and moves right in every frame."""
    spec = SceneSpec(
        objects=(ObjectSpec("square", "red", "medium", "right"),),
        background="navy",
        texture="plain",
        camera="static",
    )
    video = render([Scene(spec=spec, centers=((0.3, 0.5),), seed=1)])[0]
    obj = analyze(video, "A medium red square moving right on a plain navy background.").objects[0]
    xs, ys = np.array(obj.positions).T
    assert len(obj.positions) == video.shape[0] == obj.visible_frames
    assert np.all(np.diff(xs) > 0) and 0.0 < xs.min() < xs.max() < 1.0
    assert np.ptp(ys) < 0.02 and abs(ys.mean() - 0.5) < 0.05
