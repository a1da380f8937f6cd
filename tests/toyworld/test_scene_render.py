"""Scenes, rendering and prompts of the toy world."""

from __future__ import annotations

import numpy as np
import pytest

from descore.errors import ConfigError
from toyworld.prompts import parse_prompt, write_prompt
from toyworld.render import render
from toyworld.scene import (
    BACKGROUND_COLORS,
    OBJECT_COLORS,
    Effects,
    ObjectEffects,
    ObjectSpec,
    Scene,
    SceneSpec,
    WorldConfig,
    layout_fits,
    sample_scene,
    sample_spec,
)

CONFIG = WorldConfig()


def _scene(
    shape="circle",
    color="red",
    size="large",
    motion="right",
    background="gray",
    texture="plain",
    camera=None,
    center=(0.5, 0.5),
    **effects,
) -> Scene:
    spec = SceneSpec(
        objects=(ObjectSpec(shape, color, size, motion),),
        background=background,
        texture=texture,
        camera=camera,
    )
    return Scene(spec=spec, centers=(center,), effects=Effects(**effects), seed=3)


def _object_mask(video: np.ndarray, color: str) -> np.ndarray:
    rgb = np.array(OBJECT_COLORS[color], dtype=np.float32)[None, :, None, None]
    return np.linalg.norm(video - rgb, axis=1) < 0.1


def test_render_layout_range_and_determinism():
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng, CONFIG) for _ in range(20)]
    first, second = render(scenes, CONFIG), render(scenes, CONFIG, chunk_size=7)
    assert first.shape == (20, 9, 3, 64, 64) and first.dtype == np.float32
    assert first.min() >= 0.0 and first.max() <= 1.0
    np.testing.assert_array_equal(first, second)
    other = [sample_scene(np.random.default_rng(1), CONFIG) for _ in range(20)]
    assert not np.array_equal(first, render(other, CONFIG))


def test_object_moves_at_world_speed_and_pan_moves_the_picture():
    video = render([_scene(motion="right", center=(0.4, 0.5))])[0]
    mask = _object_mask(video, "red")
    xs = np.array([np.nonzero(m)[1].mean() for m in mask])
    np.testing.assert_allclose(np.diff(xs), CONFIG.object_speed, atol=0.15)
    # A camera panning left moves the whole picture (texture and a still object) to the right.
    panned = render([_scene(motion="still", texture="striped", camera="pan_left", center=(0.4, 0.5))])[0]
    xs = np.array([np.nonzero(m)[1].mean() for m in _object_mask(panned, "red")])
    assert abs((xs[-1] - xs[0]) / 8 - CONFIG.pan_speed) < 0.1
    row = panned[:, 0, 2, :]  # red channel of the top row: texture only
    shift = np.argmin([np.abs(row[5, 12:52] - row[0, 12 - d : 52 - d]).sum() for d in range(-10, 11)]) - 10
    assert shift == round(5 * CONFIG.pan_speed)  # 8 pixels to the right after 5 frames


def test_background_colour_texture_and_frame_size():
    config = WorldConfig(num_frames=5, height=48, width=80)
    plain = render([_scene(background="navy", center=(0.5, 0.5))], config)[0]
    assert plain.shape == (5, 3, 48, 80)
    np.testing.assert_allclose(plain[0, :, 0, 0], BACKGROUND_COLORS["navy"][0], atol=1e-6)
    striped = render([_scene(background="white", texture="striped")], config)[0]
    checkered = render([_scene(background="white", texture="checkered")], config)[0]
    top, bottom = striped[0, 0, 2, :], striped[0, 0, 45, :]
    np.testing.assert_allclose(top, bottom, atol=1e-6)  # vertical bands: every row alike
    assert not np.allclose(checkered[0, 0, 2, :], checkered[0, 0, 45, :])


def test_effects_change_pixels_as_described():
    clean = render([_scene()])[0]
    noisy = render([_scene(noise=0.1)])[0]
    assert 0.05 < float(np.std(noisy - clean)) < 0.12
    blurred = render([_scene(blur=0.03)])[0]
    assert np.abs(np.diff(blurred[4, 0], axis=-1)).max() < 0.6 * np.abs(np.diff(clean[4, 0], axis=-1)).max()
    flicker = render([_scene(flicker=0.3)])[0]
    means = flicker.mean(axis=(1, 2, 3)) - clean.mean(axis=(1, 2, 3))
    assert np.abs(means[1::2]).min() > 0.05 and np.abs(means[0::2]).max() < 1e-6  # every other frame swings
    hidden = Scene(
        spec=_scene().spec, centers=((0.5, 0.5),), effects=Effects(objects=(ObjectEffects(visible=False),))
    )
    assert not _object_mask(render([hidden])[0], "red").any()


def test_sampled_layouts_fit_and_round_trip():
    rng = np.random.default_rng(5)
    for _ in range(200):
        scene = sample_scene(rng, CONFIG)
        px = [(x * CONFIG.width, y * CONFIG.height) for x, y in scene.centers]
        assert layout_fits(scene.spec, px, CONFIG)
        assert Scene.from_dict(scene.to_dict()) == scene
        if scene.spec.camera in ("pan_left", "pan_right"):
            assert scene.spec.texture != "plain"  # a pan must be visible


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: ObjectSpec("hexagon", "red", "small", "left"), "unknown shape 'hexagon'"),
        (lambda: ObjectSpec("circle", "pink", "small", "left"), "unknown colour 'pink'"),
        (lambda: ObjectSpec("circle", "red", "giant", "left"), "unknown size 'giant'"),
        (lambda: ObjectSpec("circle", "red", "small", "sideways"), "unknown motion 'sideways'"),
        (lambda: SceneSpec(objects=(), background="gray"), "1 to 2 objects"),
        (
            lambda: SceneSpec(objects=(ObjectSpec("circle", "red", "small", "left"),), background="sky"),
            "unknown background colour 'sky'",
        ),
        (
            lambda: SceneSpec(objects=(ObjectSpec("circle", "red", "small", "left"),) * 2, background="gray"),
            "distinct colours",
        ),
        (lambda: WorldConfig(height=8), "height"),
        (lambda: WorldConfig(num_frames=1), "num_frames"),
        (lambda: WorldConfig(width=64.5), "width"),
        (lambda: Effects(noise=2.0), "noise"),
    ],
)
def test_bad_scene_input_is_named(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_prompts_round_trip_and_vary():
    rng = np.random.default_rng(2)
    for _ in range(500):
        spec = sample_spec(rng)
        assert parse_prompt(write_prompt(spec, rng)) == spec
    spec = sample_spec(np.random.default_rng(9))
    phrasings = {write_prompt(spec, np.random.default_rng(k)) for k in range(20)}
    assert len(phrasings) >= 10


def test_parse_prompt_reads_unsaid_attributes_and_rejects_unknown_words():
    spec = parse_prompt("A red circle moving left on a gray background, static camera.")
    assert spec.objects[0].size is None and spec.texture == "plain" and spec.camera == "static"
    assert parse_prompt("a big blue box rising against a checkered dark blue backdrop").background == "navy"
    for bad, message in [
        ("a red hexagon moving left on a gray background", "no shape"),
        ("a red circle moving left", "no background"),
        ("a red blue circle moving left on a gray background", "several colours"),
        ("a red circle moving left on a gray shiny background", "unknown background word"),
        ("a red circle moving left quickly on a gray background", "unknown word"),
        ("", "non-empty"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_prompt(bad)
