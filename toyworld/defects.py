"""Defects a video generator makes, and the ground-truth judge scores they imply.

Each :class:`Defect` belongs to one judge dimension and has a severity: 1 (minor flaw) or 0 (failure). A video's
ground-truth sub-score for a dimension is the lowest severity among its defects there, 2 when it has none, and N/A
(None) for the camera when the prompt does not mention the camera. The overall score follows the judge's interval
rule (:func:`descore.answer.overall_from_subscores`).

| dimension | defect | severity | what the video shows |
|---|---|---|---|
| subject | wrong_color, wrong_shape | 0 | the object has another colour / shape |
| subject | missing_object, split | 0 | the object is absent / broken into two halves |
| subject | wrong_size, fragments | 1 | another size class / small blobs of its colour around it |
| dynamics | wrong_direction, frozen | 0 | moves another way (or moves when it should stay) / stays still |
| dynamics | jitter | 1 | the object trembles around its path |
| camera | unwanted_pan, missing_pan, wrong_pan | 0 | pans when static was asked / does not pan / pans the other way |
| camera | shake | 1 | the whole picture trembles |
| environment | wrong_background / wrong_texture | 0 / 1 | another background colour / texture |
| style | flicker, noise, blur | 1 or 0 | brightness swings, grain, softness; strength by severity |

Dynamics are judged on the objects that are visible; a video with no visible object fails dynamics (0).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from descore.answer import DIMENSIONS, SubScore
from descore.errors import ConfigError
from toyworld.scene import (
    BACKGROUND_COLORS,
    CAMERAS,
    MOTIONS,
    OBJECT_COLORS,
    SHAPES,
    SIZES,
    TEXTURES,
    Effects,
    Scene,
    SceneSpec,
    WorldConfig,
    layout_fits,
    place_objects,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DefectKind:
    """A kind of defect: its judge dimension, allowed severities and whether it targets one object."""

    dimension: str
    severities: tuple[int, ...]
    per_object: bool


DEFECT_KINDS: dict[str, DefectKind] = {
    "wrong_color": DefectKind("subject", (0,), True),
    "wrong_shape": DefectKind("subject", (0,), True),
    "missing_object": DefectKind("subject", (0,), True),
    "split": DefectKind("subject", (0,), True),
    "wrong_size": DefectKind("subject", (1,), True),
    "fragments": DefectKind("subject", (1,), True),
    "wrong_direction": DefectKind("dynamics", (0,), True),
    "frozen": DefectKind("dynamics", (0,), True),
    "jitter": DefectKind("dynamics", (1,), True),
    "unwanted_pan": DefectKind("camera", (0,), False),
    "missing_pan": DefectKind("camera", (0,), False),
    "wrong_pan": DefectKind("camera", (0,), False),
    "shake": DefectKind("camera", (1,), False),
    "wrong_background": DefectKind("environment", (0,), False),
    "wrong_texture": DefectKind("environment", (1,), False),
    "flicker": DefectKind("style", (1, 0), False),
    "noise": DefectKind("style", (1, 0), False),
    "blur": DefectKind("style", (1, 0), False),
}

#: Strength of the style defects per severity (flicker swing, noise sigma, blur sigma as a fraction of the side).
STYLE_STRENGTH: dict[str, dict[int, float]] = {
    "flicker": {1: 0.12, 0: 0.3},
    "noise": {1: 0.05, 0: 0.14},
    "blur": {1: 0.016, 0: 0.032},
}
#: Jitter of an object and shake of the camera: per-frame offsets up to this fraction of the side.
JITTER_AMPLITUDE = 0.05
SHAKE_AMPLITUDE = 0.035
#: Fragments drawn per frame around a fragmenting object.
FRAGMENT_COUNT = 3
#: Probability of 0, 1, 2, 3 defects in a video drawn by :func:`sample_defects`.
DEFECT_COUNT_PROBABILITIES: tuple[float, ...] = (0.3, 0.4, 0.2, 0.1)

_CAMERA_MOTION = ("unwanted_pan", "missing_pan", "wrong_pan")
_MOTION_DEFECTS = ("wrong_direction", "frozen")
_VALUE_KINDS = {
    "wrong_color": "color",
    "wrong_shape": "shape",
    "wrong_size": "size",
    "wrong_direction": "motion",
    "unwanted_pan": "camera",
    "wrong_background": "background",
    "wrong_texture": "texture",
}


@dataclass(frozen=True)
class Defect:
    """One defect: its kind, severity (1 minor, 0 failure), target object (object-level kinds) and new value.

    ``value`` is the attribute the video shows instead of the asked one, for the kinds that swap an attribute
    (colour, shape, size, direction, pan direction of an unwanted pan, background colour, texture).
    """

    kind: str
    severity: int
    target: int | None = None
    value: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in DEFECT_KINDS:
            raise ConfigError(f"unknown defect kind {self.kind!r}; expected one of {sorted(DEFECT_KINDS)}")
        info = DEFECT_KINDS[self.kind]
        if self.severity not in info.severities:
            raise ConfigError(
                f"defect {self.kind!r} has severity {list(info.severities)}, got {self.severity!r}"
            )
        if info.per_object != (self.target is not None):
            need = "needs a target object" if info.per_object else "takes no target object"
            raise ConfigError(f"defect {self.kind!r} {need}, got target={self.target!r}")
        if (self.kind in _VALUE_KINDS) != (self.value is not None):
            need = "needs a replacement value" if self.kind in _VALUE_KINDS else "takes no value"
            raise ConfigError(f"defect {self.kind!r} {need}, got value={self.value!r}")

    @property
    def dimension(self) -> str:
        """The judge dimension the defect lowers."""
        return DEFECT_KINDS[self.kind].dimension

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description."""
        return dataclasses.asdict(self)


def _check(scene: Scene, defects: Sequence[Defect]) -> None:
    """Raise ConfigError when the defects cannot apply together to the scene."""
    spec = scene.spec
    seen: set[tuple[str, int | None]] = set()
    touched: dict[int, list[str]] = {}
    style = camera_motion = 0
    for d in defects:
        where = f"defect {d.kind!r}"
        if (d.kind, d.target) in seen:
            raise ConfigError(f"{where} is listed twice for the same target")
        seen.add((d.kind, d.target))
        if d.target is not None:
            if not 0 <= d.target < len(spec.objects):
                raise ConfigError(f"{where} targets object {d.target}, the scene has {len(spec.objects)}")
            touched.setdefault(d.target, []).append(d.kind)
        style += d.dimension == "style"
        camera_motion += d.kind in _CAMERA_MOTION
        if d.dimension == "camera" and spec.camera is None:
            raise ConfigError(f"{where} needs a prompt that mentions the camera")
        obj = spec.objects[d.target] if d.target is not None else None
        current = {
            "color": obj.color if obj else None,
            "shape": obj.shape if obj else None,
            "size": obj.size if obj else None,
            "motion": obj.motion if obj else None,
            "camera": spec.camera,
            "background": spec.background,
            "texture": spec.texture,
        }
        if d.kind in _VALUE_KINDS:
            field_name = _VALUE_KINDS[d.kind]
            if d.value == current[field_name]:
                raise ConfigError(f"{where} must change the {field_name}, got the asked value {d.value!r}")
        if d.kind == "wrong_size" and obj.size is None:
            raise ConfigError(f"{where} needs a prompt that names the object's size")
        if d.kind == "frozen" and obj.motion == "still":
            raise ConfigError(f"{where} needs a moving object")
        if d.kind == "wrong_direction" and d.value == "still":
            raise ConfigError(f"{where} cannot stop the object (that is 'frozen')")
        if d.kind == "unwanted_pan" and (spec.camera != "static" or d.value == "static"):
            raise ConfigError(f"{where} needs a static camera in the prompt and a pan as value")
        if d.kind in ("missing_pan", "wrong_pan") and spec.camera not in ("pan_left", "pan_right"):
            raise ConfigError(f"{where} needs a panning camera in the prompt")
    for target, kinds in touched.items():
        if "missing_object" in kinds and len(kinds) > 1:
            raise ConfigError(
                f"object {target} is missing, so it cannot also have {sorted(set(kinds) - {'missing_object'})}"
            )
        if all(k in kinds for k in _MOTION_DEFECTS):
            raise ConfigError(f"object {target} cannot be both frozen and moving the wrong way")
    if camera_motion > 1:
        raise ConfigError("at most one of unwanted_pan, missing_pan, wrong_pan applies to a video")


def _shown(scene: Scene, defects: Sequence[Defect]) -> tuple[SceneSpec, Effects]:
    """What the video shows (content and effects) once the defects are in, before any re-layout."""
    spec = scene.spec
    objects = list(spec.objects)
    obj_effects = [scene.effects.for_object(i) for i in range(len(objects))]
    camera, background, texture = spec.camera, spec.background, spec.texture
    effects: dict[str, float] = {}
    for d in defects:
        i = d.target
        if d.kind in ("wrong_color", "wrong_shape", "wrong_size", "wrong_direction"):
            objects[i] = dataclasses.replace(objects[i], **{_VALUE_KINDS[d.kind]: d.value})
        elif d.kind == "frozen":
            objects[i] = dataclasses.replace(objects[i], motion="still")
        elif d.kind == "missing_object":
            obj_effects[i] = dataclasses.replace(obj_effects[i], visible=False)
        elif d.kind == "split":
            obj_effects[i] = dataclasses.replace(obj_effects[i], split=True)
        elif d.kind == "fragments":
            obj_effects[i] = dataclasses.replace(obj_effects[i], fragments=FRAGMENT_COUNT)
        elif d.kind == "jitter":
            obj_effects[i] = dataclasses.replace(obj_effects[i], jitter=JITTER_AMPLITUDE)
        elif d.kind == "unwanted_pan":
            camera = d.value
        elif d.kind == "missing_pan":
            camera = "static"
        elif d.kind == "wrong_pan":
            camera = "pan_right" if camera == "pan_left" else "pan_left"
        elif d.kind == "shake":
            effects["shake"] = SHAKE_AMPLITUDE
        elif d.kind == "wrong_background":
            background = d.value
        elif d.kind == "wrong_texture":
            texture = d.value
        else:
            effects[d.kind] = STYLE_STRENGTH[d.kind][d.severity]
    shown = SceneSpec(objects=tuple(objects), background=background, texture=texture, camera=camera)
    return shown, dataclasses.replace(scene.effects, objects=tuple(obj_effects), **effects)


def apply_defects(scene: Scene, defects: Sequence[Defect], config: WorldConfig | None = None) -> Scene:
    """The scene a generator with these defects would show for the prompt of ``scene`` (a defect-free scene).

    Objects keep their places when the new motions still fit the frame; otherwise they are placed again with the
    scene's own seed, so the result is deterministic.
    """
    config = config or WorldConfig()
    _check(scene, defects)
    shown, effects = _shown(scene, defects)
    centers = scene.centers
    px = [(x * config.width, y * config.height) for x, y in centers]
    if not layout_fits(shown, px, config, effects.objects):
        placed = place_objects(shown, np.random.default_rng([scene.seed, 1]), config, effects.objects)
        if placed is None:
            logger.debug("no layout keeps %s in frame and apart; keeping the asked layout", shown)
        else:
            centers = placed
    return Scene(spec=shown, centers=centers, effects=effects, seed=scene.seed)


def ground_truth(scene: Scene, defects: Sequence[Defect]) -> dict[str, SubScore]:
    """The judge's sub-scores (2, 1, 0 or None for N/A) for a video of ``scene`` made with ``defects``."""
    _check(scene, defects)
    scores: dict[str, SubScore] = {d: 2 for d in DIMENSIONS}
    if scene.spec.camera is None:
        scores["camera"] = None
    for d in defects:
        scores[d.dimension] = min(scores[d.dimension], d.severity)
    missing = {d.target for d in defects if d.kind == "missing_object"}
    if len(missing) == len(scene.spec.objects):
        scores["dynamics"] = 0
    return scores


def _candidates(
    scene: Scene, chosen: list[Defect], forbidden: Collection[tuple[str, str]], max_style: int
) -> dict[str, list[Defect]]:
    """Every defect that could be added to ``chosen``, grouped by dimension."""
    spec = scene.spec
    by_dim: dict[str, list[Defect]] = {d: [] for d in DIMENSIONS}
    kinds_on = {t: {d.kind for d in chosen if d.target == t} for t in range(len(spec.objects))}
    shown = _shown(scene, chosen)[0]
    used_colors = {o.color for o in spec.objects} | {o.color for o in shown.objects}

    def add(kind: str, target: int | None = None, values: Sequence[str | None] = (None,)) -> None:
        for severity in DEFECT_KINDS[kind].severities:
            for value in values:
                by_dim[DEFECT_KINDS[kind].dimension].append(Defect(kind, severity, target, value))

    for t, obj in enumerate(spec.objects):
        on = kinds_on[t]
        if "missing_object" in on:
            continue
        now = shown.objects[t]
        if not on:
            add("missing_object", t)
        if "wrong_color" not in on:
            add(
                "wrong_color",
                t,
                [c for c in OBJECT_COLORS if c not in used_colors and (c, now.shape) not in forbidden],
            )
        if "wrong_shape" not in on:
            add("wrong_shape", t, [s for s in SHAPES if s != obj.shape and (now.color, s) not in forbidden])
        if "wrong_size" not in on and obj.size is not None:
            add("wrong_size", t, [s for s in SIZES if s != obj.size])
        for kind in ("split", "fragments", "jitter"):
            if kind not in on:
                add(kind, t)
        if not on & set(_MOTION_DEFECTS):
            add("wrong_direction", t, [m for m in MOTIONS if m not in (obj.motion, "still")])
            if obj.motion != "still":
                add("frozen", t)
    kinds = {d.kind for d in chosen}
    if spec.camera is not None and spec.texture != "plain":
        if not kinds & set(_CAMERA_MOTION):
            if spec.camera == "static":
                add("unwanted_pan", values=[c for c in CAMERAS if c != "static"])
            else:
                add("missing_pan")
                add("wrong_pan")
        if "shake" not in kinds:
            add("shake")
    if "wrong_background" not in kinds:
        add("wrong_background", values=[b for b in BACKGROUND_COLORS if b != spec.background])
    if "wrong_texture" not in kinds:
        keep_texture = spec.camera is not None and spec.texture != "plain"
        add(
            "wrong_texture",
            values=[t for t in TEXTURES if t != spec.texture and not (keep_texture and t == "plain")],
        )
    if sum(d.dimension == "style" for d in chosen) < max_style:
        for kind in STYLE_STRENGTH:
            add(kind)
    return {dim: c for dim, c in by_dim.items() if c}


def sample_defects(
    scene: Scene,
    rng: np.random.Generator,
    *,
    count: int | None = None,
    forbidden_combos: Collection[tuple[str, str]] = (),
    max_style: int = 1,
    count_probabilities: Sequence[float] = DEFECT_COUNT_PROBABILITIES,
) -> list[Defect]:
    """Random defects for a video of ``scene``: a dimension first (uniformly), then a kind, target and value.

    ``forbidden_combos`` lists (colour, shape) pairs the shown video must not contain (held-out combinations);
    ``max_style`` caps style defects per video so each style flaw can be measured on its own; camera defects are
    drawn only where a pan could be seen (a mentioned camera over a textured background).
    """
    if count is None:
        probs = np.asarray(count_probabilities, dtype=float)
        count = int(rng.choice(len(probs), p=probs / probs.sum()))
    chosen: list[Defect] = []
    for _ in range(count):
        options = _candidates(scene, chosen, forbidden_combos, max_style)
        if not options:
            break
        dims = sorted(options, key=DIMENSIONS.index)
        pool = options[dims[int(rng.integers(len(dims)))]]
        kinds = sorted({d.kind for d in pool}, key=list(DEFECT_KINDS).index)
        kind = kinds[int(rng.integers(len(kinds)))]
        pool = [d for d in pool if d.kind == kind]
        chosen.append(pool[int(rng.integers(len(pool)))])
    return chosen


def defects_from_dicts(items: Sequence[Mapping[str, Any]]) -> list[Defect]:
    """Defects from their :meth:`Defect.to_dict` descriptions (as stored in the dataset manifest)."""
    try:
        return [Defect(**dict(item)) for item in items]
    except TypeError as err:
        raise ConfigError(f"not a defect description: {err}") from err
