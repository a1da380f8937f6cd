"""Mirrored views: the prompt follows what the view shows, and the analyzer measures a view as it measures the clip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from descore.answer import DIMENSIONS
from descore.errors import ConfigError
from toyworld.analyzer import analyze
from toyworld.defects import apply_defects, ground_truth, sample_defects
from toyworld.mirror import MIRRORS, check_views, mirror_frames, mirror_prompt, mirror_spec
from toyworld.prompts import parse_prompt, write_prompt
from toyworld.render import render
from toyworld.scene import ObjectSpec, SceneSpec, sample_scene

SPEC = SceneSpec(
    objects=(ObjectSpec("circle", "red", "large", "left"), ObjectSpec("bar", "blue", None, "up")),
    background="gray",
    texture="striped",
    camera="pan_right",
)


@pytest.mark.parametrize(
    ("view", "motions", "camera"),
    [
        ("hflip", ("right", "up"), "pan_left"),
        ("reverse", ("right", "down"), "pan_left"),
        ("hflip_reverse", ("left", "down"), "pan_right"),
    ],
)
def test_views_swap_motion_and_pan(view, motions, camera):
    mirrored = mirror_spec(SPEC, view)
    assert tuple(o.motion for o in mirrored.objects) == motions and mirrored.camera == camera
    assert [(o.shape, o.color, o.size) for o in mirrored.objects] == [
        (o.shape, o.color, o.size) for o in SPEC.objects
    ]
    assert mirror_spec(mirrored, view) == SPEC  # every view is its own inverse
    prompt = mirror_prompt(write_prompt(SPEC, np.random.default_rng(0)), view, np.random.default_rng(1))
    assert parse_prompt(prompt) == mirrored
    assert mirror_spec(SceneSpec(objects=SPEC.objects, background="gray"), view).camera is None


def test_view_frames_are_flips_and_involutions():
    frames = torch.rand(5, 3, 4, 6)
    assert torch.equal(mirror_frames(frames, "hflip"), frames.flip(3))
    assert torch.equal(mirror_frames(frames, "reverse"), frames.flip(0))
    assert torch.equal(mirror_frames(frames, "hflip_reverse"), frames.flip(0).flip(3))
    for view in MIRRORS:
        assert torch.equal(mirror_frames(mirror_frames(frames, view), view), frames)


def test_the_analyzer_measures_a_view_as_it_measures_the_clip():
    """Rendered clips with 0-3 defects: the view, judged against the mirrored prompt, gets the clip's ground truth
    (the labels of mirrored training data are measured, so this checks that a view is a clip of the same world)."""
    rng = np.random.default_rng(11)
    asked = [sample_scene(rng) for _ in range(60)]
    defects = [sample_defects(scene, rng) for scene in asked]
    truth = [ground_truth(scene, d) for scene, d in zip(asked, defects)]
    videos = torch.from_numpy(render([apply_defects(s, d) for s, d in zip(asked, defects)]))
    prompts = [write_prompt(scene.spec, rng) for scene in asked]
    for view in MIRRORS:
        agreement = np.mean(
            [
                analyze(mirror_frames(video, view), mirror_prompt(prompt, view, rng)).subscores[d] == t[d]
                for video, prompt, t in zip(videos, prompts, truth)
                for d in DIMENSIONS
            ]
        )
        assert agreement >= 0.97, (view, agreement)


def test_bad_views_are_refused():
    with pytest.raises(ConfigError, match="unknown mirrored view 'vflip'"):
        mirror_spec(SPEC, "vflip")
    with pytest.raises(ConfigError, match="distinct views"):
        check_views(["hflip", "hflip"])
    with pytest.raises(ConfigError, match="distinct views"):
        check_views("hflip")
    with pytest.raises(ConfigError, match=r"\(T, C, H, W\)"):
        mirror_frames(torch.rand(3, 4, 6), "hflip")
