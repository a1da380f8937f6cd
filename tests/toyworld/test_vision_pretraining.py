"""Vision-tower pretraining on rendered toy clips: exact labels, analyzer labels, and a trained, strictly loadable tower."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from descore.errors import ConfigError, VideoError
from descore.modeling import load_backbone
from descore.video_io import write_video
from toyworld.defects import Defect, apply_defects
from toyworld.generator import WORLD
from toyworld.render import render
from toyworld.scene import BACKGROUND_COLORS, SHAPES, ObjectSpec, SceneSpec, sample_scene
from toyworld.tiny_models import save_qwen_vl
from toyworld.vision_pretraining import (
    ATTRIBUTES,
    IGNORE,
    VisionPretrainingConfig,
    measured_attributes,
    measured_clips,
    pretrain_vision_tower,
    render_batch,
    scene_attributes,
)

SAMPLING = {"fps": 8.0, "min_frames": 2, "max_frames": 9, "min_pixels": 64 * 64, "max_pixels": 64 * 64}


def one_scene(*defects: Defect):
    spec = SceneSpec(
        objects=(ObjectSpec(shape="triangle", color="red", size="large", motion="left"),),
        background="gray",
        texture="striped",
        camera="static",
    )
    scene = sample_scene(np.random.default_rng(0), WORLD, spec=spec)
    return apply_defects(scene, list(defects), WORLD)


def test_scene_attributes_are_the_rendered_truth():
    labels = scene_attributes(one_scene(Defect("split", severity=0, target=0), Defect("flicker", severity=0)))
    assert set(labels) == set(ATTRIBUTES)
    assert labels["red:present"] == 1 and labels["red:shape"] == SHAPES.index("triangle")
    assert labels["red:split"] == 1 and labels["red:jitter"] == 0
    assert labels["flicker"] == ATTRIBUTES["flicker"].index("failure") and labels["blur"] == 0
    assert labels["background"] == list(BACKGROUND_COLORS).index("gray")
    assert labels["blue:present"] == 0 and labels["blue:shape"] == IGNORE
    hidden = scene_attributes(one_scene(Defect("missing_object", severity=0, target=0)))
    assert hidden["red:present"] == 0 and hidden["red:motion"] == IGNORE


def test_measured_attributes_agree_with_the_truth_on_a_clean_render():
    scene = one_scene()
    truth = scene_attributes(scene)
    measured = measured_attributes(torch.from_numpy(render([scene], WORLD)[0]))
    for name in (
        "background",
        "texture",
        "red:present",
        "red:shape",
        "red:motion",
        "blue:present",
        "noise",
        "flicker",
    ):
        assert measured[name] == truth[name], name


def test_render_batch_is_seeded():
    a_frames, a_labels = render_batch(np.random.default_rng(3), 4, WORLD)
    b_frames, b_labels = render_batch(np.random.default_rng(3), 4, WORLD)
    assert a_frames.shape == (4, WORLD.num_frames, 3, WORLD.height, WORLD.width)
    assert torch.equal(a_frames, b_frames) and a_labels == b_labels


def test_pretraining_trains_the_tower_only_and_writes_a_strict_checkpoint(tmp_path):
    base = save_qwen_vl(tmp_path / "base", "qwen3_vl", "tiny")
    frames, _ = render_batch(np.random.default_rng(5), 6, WORLD)
    generated = (frames, [measured_attributes(f) for f in frames])
    config = VisionPretrainingConfig(steps=40, batch_size=16, eval_clips=64, learning_rate=3e-3)
    out = pretrain_vision_tower(
        base, tmp_path / "vision", SAMPLING, WORLD, config, generated=generated, progress=False
    )
    load_backbone(out)  # strict: every tensor present with its shape
    old, new = load_file(base / "model.safetensors"), load_file(out / "model.safetensors")
    assert old.keys() == new.keys()
    changed = {k for k in old if not torch.equal(old[k], new[k])}
    assert changed and all(".visual." in k for k in changed)
    report = json.loads((out / "vision_pretraining.json").read_text())
    assert report["loss_last"] < report["loss_first"] - 1.0
    with pytest.raises(ConfigError, match="not empty"):
        pretrain_vision_tower(base, out, SAMPLING, WORLD, config, progress=False)


def test_bad_settings_and_inputs(tmp_path):
    with pytest.raises(ConfigError, match="generated_fraction"):
        VisionPretrainingConfig(generated_fraction=1.0)
    with pytest.raises(ConfigError, match="steps"):
        VisionPretrainingConfig(steps=0)
    with pytest.raises(ConfigError, match="eval_clips"):
        VisionPretrainingConfig(eval_clips=0)
    base = save_qwen_vl(tmp_path / "base", "qwen3_vl", "tiny")
    wrong = (torch.rand(2, 5, 3, 32, 32), [{}, {}])
    with pytest.raises(ConfigError, match="generated: frames of shape"):
        pretrain_vision_tower(base, tmp_path / "out", SAMPLING, WORLD, generated=wrong, progress=False)
    small = write_video(torch.rand(9, 3, 32, 32), tmp_path / "small.mp4", fps=8.0)
    large = write_video(torch.rand(9, 3, 48, 48), tmp_path / "large.mp4", fps=8.0)
    with pytest.raises(VideoError, match="large.mp4"):
        measured_clips([small, large])
