"""Defects, ground-truth sub-scores and preference labels."""

from __future__ import annotations

import numpy as np
import pytest

from descore.answer import DIMENSIONS, overall_from_subscores
from descore.errors import ConfigError
from toyworld.defects import (
    DEFECT_KINDS,
    STYLE_STRENGTH,
    Defect,
    apply_defects,
    defects_from_dicts,
    ground_truth,
    sample_defects,
)
from toyworld.preferences import LABEL_COLUMNS, compare, label_pair, utility
from toyworld.scene import ObjectSpec, Scene, SceneSpec, sample_scene


def _scene(camera="static", texture="striped", motions=("left",)) -> Scene:
    colors = ("red", "blue")
    objects = tuple(ObjectSpec("square", colors[i], "medium", m) for i, m in enumerate(motions))
    spec = SceneSpec(objects=objects, background="gray", texture=texture, camera=camera)
    centers = ((0.5, 0.28), (0.5, 0.72))[: len(objects)]
    return Scene(spec=spec, centers=centers, seed=11)


@pytest.mark.parametrize(
    "defect, dimension, score",
    [
        (Defect("wrong_color", 0, 0, "green"), "subject", 0),
        (Defect("wrong_shape", 0, 0, "circle"), "subject", 0),
        (Defect("split", 0, 0), "subject", 0),
        (Defect("wrong_size", 1, 0, "small"), "subject", 1),
        (Defect("fragments", 1, 0), "subject", 1),
        (Defect("wrong_direction", 0, 0, "up"), "dynamics", 0),
        (Defect("frozen", 0, 0), "dynamics", 0),
        (Defect("jitter", 1, 0), "dynamics", 1),
        (Defect("unwanted_pan", 0, None, "pan_left"), "camera", 0),
        (Defect("shake", 1), "camera", 1),
        (Defect("wrong_background", 0, None, "black"), "environment", 0),
        (Defect("wrong_texture", 1, None, "checkered"), "environment", 1),
        (Defect("flicker", 1), "style", 1),
        (Defect("noise", 0), "style", 0),
        (Defect("blur", 1), "style", 1),
    ],
)
def test_each_defect_lowers_only_its_dimension(defect, dimension, score):
    scores = ground_truth(_scene(), [defect])
    assert scores[dimension] == score
    assert all(scores[d] == 2 for d in DIMENSIONS if d != dimension)
    assert DEFECT_KINDS[defect.kind].dimension == dimension


def test_ground_truth_rules():
    assert ground_truth(_scene(camera=None), [])["camera"] is None
    assert ground_truth(_scene(camera="pan_left"), [Defect("missing_pan", 0)])["camera"] == 0
    both = ground_truth(_scene(), [Defect("fragments", 1, 0), Defect("wrong_color", 0, 0, "green")])
    assert both["subject"] == 0  # the worst defect of a dimension decides
    # A missing object is a subject failure; with nothing visible at all, dynamics fails too.
    two = _scene(motions=("left", "up"))
    assert ground_truth(two, [Defect("missing_object", 0, 1)]) == {
        **dict.fromkeys(DIMENSIONS, 2),
        "subject": 0,
    }
    gone = ground_truth(_scene(), [Defect("missing_object", 0, 0)])
    assert gone["subject"] == 0 and gone["dynamics"] == 0
    assert overall_from_subscores(gone) < 2


def test_apply_defects_shows_what_the_defects_say():
    scene = _scene(motions=("left", "up"))
    shown = apply_defects(
        scene,
        [
            Defect("wrong_color", 0, 0, "green"),
            Defect("frozen", 0, 1),
            Defect("unwanted_pan", 0, None, "pan_right"),
            Defect("noise", 0),
            Defect("split", 0, 0),
        ],
    )
    assert shown.spec.objects[0].color == "green" and shown.spec.objects[1].motion == "still"
    assert shown.spec.camera == "pan_right" and shown.effects.noise == STYLE_STRENGTH["noise"][0]
    assert shown.effects.objects[0].split and not shown.effects.objects[1].split
    assert shown.seed == scene.seed and apply_defects(scene, []).spec == scene.spec


@pytest.mark.parametrize(
    "scene, defects, message",
    [
        (_scene(), [Defect("frozen", 0, 0)] * 2, "listed twice"),
        (_scene(motions=("still",)), [Defect("frozen", 0, 0)], "moving object"),
        (_scene(camera=None), [Defect("shake", 1)], "mentions the camera"),
        (_scene(), [Defect("wrong_color", 0, 0, "red")], "must change"),
        (_scene(), [Defect("missing_pan", 0)], "panning camera"),
        (_scene(), [Defect("split", 0, 3)], "targets object 3"),
        (_scene(), [Defect("missing_object", 0, 0), Defect("jitter", 1, 0)], "missing"),
        (_scene(motions=("left", "up")), [Defect("wrong_color", 0, 0, "blue")], "distinct colours"),
    ],
)
def test_impossible_defects_are_rejected(scene, defects, message):
    with pytest.raises(ConfigError, match=message):
        apply_defects(scene, defects)


@pytest.mark.parametrize(
    "args, message",
    [
        (("melting", 0), "unknown defect kind"),
        (("flicker", 2), "severity"),
        (("jitter", 1), "needs a target"),
        (("wrong_color", 0, 0), "needs a replacement value"),
        (("noise", 0, None, "x"), "takes no value"),
    ],
)
def test_bad_defect_descriptions(args, message):
    with pytest.raises(ConfigError, match=message):
        Defect(*args)


def test_sampled_defects_are_valid_balanced_and_respect_held_out_combinations():
    rng = np.random.default_rng(4)
    forbidden = {("red", "circle"), ("blue", "square")}
    kinds, counts = set(), []
    for _ in range(400):
        scene = sample_scene(rng)
        if {(o.color, o.shape) for o in scene.spec.objects} & forbidden:
            continue
        defects = sample_defects(scene, rng, forbidden_combos=forbidden)
        shown = apply_defects(scene, defects)  # raises if the set is inconsistent
        assert not {(o.color, o.shape) for o in shown.spec.objects} & forbidden
        assert sum(d.dimension == "style" for d in defects) <= 1
        assert defects_from_dicts([d.to_dict() for d in defects]) == defects
        kinds.update(d.kind for d in defects)
        counts.append(len(defects))
    assert kinds == set(DEFECT_KINDS)
    assert 0.2 < np.mean(np.array(counts) == 0) < 0.4 and max(counts) == 3


def test_pair_labels_follow_the_utility_and_each_dimension():
    clean = dict.fromkeys(DIMENSIONS, 2) | {"camera": None}
    flawed = clean | {"style": 1}
    failed = clean | {"dynamics": 0}
    assert utility(clean) > utility(flawed) > utility(failed)
    labels = label_pair(flawed, failed).labels
    assert list(labels) == list(LABEL_COLUMNS)
    assert labels["Overall"] == labels["TA"] == "A"
    assert labels["style"] == labels["VQ"] == "B" and labels["dynamics"] == labels["MQ"] == "A"
    assert labels["camera"] == "same" and labels["subject"] == "same"
    assert label_pair(clean, dict(clean)).overall == "same"
    with pytest.raises(ConfigError, match="N/A"):
        compare(None, 2)


def test_label_noise_flips_at_the_requested_rate():
    a, b = dict.fromkeys(DIMENSIONS, 2), dict.fromkeys(DIMENSIONS, 2) | {"subject": 0}
    truth = label_pair(a, b).labels
    rng = np.random.default_rng(0)
    flips = np.mean(
        [
            label_pair(a, b, noise=0.2, rng=rng).labels[c] != truth[c]
            for _ in range(500)
            for c in LABEL_COLUMNS
        ]
    )
    assert 0.17 < flips < 0.23
    with pytest.raises(ConfigError, match="random generator"):
        label_pair(a, b, noise=0.1)
    with pytest.raises(ConfigError, match="probability"):
        label_pair(a, b, noise=1.5, rng=rng)
