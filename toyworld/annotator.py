"""Chain-of-thought annotations for toy videos, in the three stages of the DeScore judge.

The real method trains on CoTs written by strong multimodal models; here :func:`annotate_cot` plays that role with
the ground truth in hand. A CoT (1) decodes the prompt into explicit and implicit expectations, (2) describes what
the video shows, (3) rates subject, dynamics, camera, environment and style with a reason each, and ends with the
judge's answer block (``<answer>{"dimensional_scores": ..., "overall_score": ...}</answer>``), which
:func:`descore.answer.parse_answer` reads back to exactly the given sub-scores. Phrasing varies with the generator.

For videos whose scene is unknown (a generator's samples) the analyzer is the annotator: :func:`annotate_analysis`
writes brief ratings from its findings, :func:`annotate_track` a track-then-judge CoT from its measurements (where
each asked object is in every temporal slice, then what is seen next to what was asked), which a tiny judge can
learn to write from the pixels (docs/training.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from descore.answer import DIMENSIONS, PRIMARY_DIMENSIONS, SubScore, format_answer, overall_from_subscores
from toyworld.analyzer import (
    FRAGMENTS_PER_FRAME,
    JITTER_RESIDUAL,
    SHAKE_RESIDUAL,
    Analysis,
    match_objects,
    style_grades,
)
from toyworld.defects import STYLE_STRENGTH
from toyworld.prompts import COLOR_WORDS, SHAPE_WORDS, parse_prompt
from toyworld.scene import ObjectEffects, ObjectSpec, Scene, SceneSpec

_MOVES = {
    "left": ("moves to the left", "slides left", "travels leftward"),
    "right": ("moves to the right", "slides right", "travels rightward"),
    "up": ("moves upward", "rises", "drifts up"),
    "down": ("moves downward", "sinks", "drifts down"),
    "still": ("stays in place", "does not move", "remains still"),
}
_CAMERA = {
    "static": ("the camera stays fixed", "the view does not move", "the shot is locked off"),
    "pan_left": ("the camera pans to the left", "the view sweeps left", "the camera turns left"),
    "pan_right": ("the camera pans to the right", "the view sweeps right", "the camera turns right"),
}
_TEXTURE = {"plain": "plain", "striped": "striped", "checkered": "checkered"}
_STAGE_TITLES = (
    ("Step 1 - what the prompt expects:", "1. Expectations from the prompt:", "First, the prompt."),
    ("Step 2 - what the video shows:", "2. What the video actually shows:", "Next, the video itself."),
    ("Step 3 - rating each dimension:", "3. Dimension by dimension:", "Now the ratings."),
)
_IMPLICIT = (
    (
        "Implicitly, every object should keep its colour, shape and size in every frame, move smoothly, and the "
        "frames should stay clean, sharp and steady in brightness."
    ),
    (
        "Beyond what is written, the objects should stay whole and consistent from frame to frame, their motion "
        "should be smooth, and the image should be free of flicker, grain and blur."
    ),
    (
        "Unstated but expected: stable objects that do not break apart or tremble, and a clean, sharp, evenly lit "
        "picture throughout."
    ),
)
_VERDICT = {2: ("2", "a 2", "2 (no flaw)"), 1: ("1", "a 1", "1 (minor flaw)"), 0: ("0", "a 0", "0 (failure)")}


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _name(obj: ObjectSpec, rng: np.random.Generator, with_size: bool = True) -> str:
    words = [_pick(rng, COLOR_WORDS[obj.color]), _pick(rng, SHAPE_WORDS[obj.shape])]
    if with_size and obj.size is not None:
        words.insert(0, obj.size)
    return " ".join(words)


def _style_word(value: float, kind: str) -> str:
    return "strong" if value >= STYLE_STRENGTH[kind][0] - 1e-9 else "mild"


def _expectations(spec: SceneSpec, rng: np.random.Generator) -> str:
    parts = [f"a {_name(o, rng)} that {_pick(rng, _MOVES[o.motion])}" for o in spec.objects]
    objects = " and ".join(parts)
    background = f"a {_TEXTURE[spec.texture]} {spec.background} background"
    if spec.camera is None:
        camera = _pick(
            rng,
            (
                "The prompt says nothing about the camera, so camera work is not applicable.",
                "No camera motion is specified, so the camera dimension does not apply.",
            ),
        )
    else:
        camera = f"It asks that {_pick(rng, _CAMERA[spec.camera])}."
    opening = _pick(rng, ("The prompt asks for", "Expected:", "The video should show"))
    return f"{opening} {objects}, on {background}. {camera} {_pick(rng, _IMPLICIT)}"


def _object_view(obj: ObjectSpec, eff: ObjectEffects, asked: ObjectSpec, rng: np.random.Generator) -> str:
    if not eff.visible:
        return _pick(
            rng,
            (
                f"There is no {_name(asked, rng, False)} anywhere in the frames.",
                f"The {_name(asked, rng, False)} never appears.",
            ),
        )
    text = f"A {_name(obj, rng)} {_pick(rng, _MOVES[obj.motion])}"
    extras = []
    if eff.split:
        extras.append(_pick(rng, ("it is broken into two separate halves", "its body is split in two")))
    if eff.fragments:
        extras.append(
            _pick(
                rng,
                (
                    f"small {obj.color} fragments flicker around it",
                    f"{obj.color} specks keep appearing next to it",
                ),
            )
        )
    if eff.jitter:
        extras.append(_pick(rng, ("it trembles from frame to frame", "its path jitters")))
    return text + ("; " + ", and ".join(extras) if extras else "") + "."


def _observations(shown: Scene, asked: SceneSpec, rng: np.random.Generator) -> str:
    spec, eff = shown.spec, shown.effects
    sentences = [
        _object_view(obj, eff.for_object(i), asked.objects[i], rng) for i, obj in enumerate(spec.objects)
    ]
    sentences.append(f"The background is {_TEXTURE[spec.texture]} {spec.background}.")
    if asked.camera is not None or spec.camera not in (None, "static"):
        camera = _pick(rng, _CAMERA[spec.camera or "static"])
        sentences.append(camera[0].upper() + camera[1:] + (", with a visible shake." if eff.shake else "."))
    flaws = []
    if eff.flicker:
        flaws.append(f"{_style_word(eff.flicker, 'flicker')} brightness flicker between frames")
    if eff.noise:
        flaws.append(f"{_style_word(eff.noise, 'noise')} grainy noise")
    if eff.blur:
        flaws.append(f"{_style_word(eff.blur, 'blur')} blur that softens every edge")
    if flaws:
        sentences.append(f"The image shows {' and '.join(flaws)}.")
    else:
        sentences.append(
            _pick(rng, ("The frames are clean and sharp.", "The image is crisp and evenly lit."))
        )
    return " ".join(sentences)


def _subject_issues(shown: Scene, asked: SceneSpec, rng: np.random.Generator) -> list[str]:
    issues = []
    for i, want in enumerate(asked.objects):
        got, eff = shown.spec.objects[i], shown.effects.for_object(i)
        name = f"the {_name(want, rng, False)}"
        if not eff.visible:
            issues.append(f"{name} is missing")
            continue
        if got.color != want.color:
            issues.append(f"{name} is {got.color} instead of {want.color}")
        if got.shape != want.shape:
            issues.append(f"{name} is drawn as a {got.shape}")
        if eff.split:
            issues.append(f"{name} is split in two")
        if want.size is not None and got.size != want.size:
            issues.append(f"{name} is {got.size} rather than {want.size}")
        if eff.fragments:
            issues.append(f"{name} sheds fragments")
    return issues


def _dynamics_issues(shown: Scene, asked: SceneSpec, rng: np.random.Generator) -> list[str]:
    issues = []
    for i, want in enumerate(asked.objects):
        got, eff = shown.spec.objects[i], shown.effects.for_object(i)
        if not eff.visible:
            continue
        name = f"the {_name(want, rng, False)}"
        if got.motion != want.motion:
            issues.append(
                f"{name} {_pick(rng, _MOVES[got.motion])} although it should have "
                f"{'stayed still' if want.motion == 'still' else 'moved ' + want.motion}"
            )
        if eff.jitter:
            issues.append(f"{name} jitters")
    if all(not shown.effects.for_object(i).visible for i in range(len(asked.objects))):
        issues.append("nothing that was asked for moves at all")
    return issues


_CAMERA_STATE = {"static": "static", "pan_left": "panning left", "pan_right": "panning right"}


def _camera_issues(shown: Scene, asked: SceneSpec) -> list[str]:
    issues = []
    if shown.spec.camera != asked.camera:
        issues.append(
            f"the camera is {_CAMERA_STATE[shown.spec.camera]} instead of {_CAMERA_STATE[asked.camera]}"
        )
    if shown.effects.shake:
        issues.append("the camera shakes")
    return issues


def _environment_issues(shown: Scene, asked: SceneSpec) -> list[str]:
    issues = []
    if shown.spec.background != asked.background:
        issues.append(f"the background is {shown.spec.background} instead of {asked.background}")
    if shown.spec.texture != asked.texture:
        issues.append(f"the background is {shown.spec.texture} rather than {asked.texture}")
    return issues


def _style_issues(shown: Scene) -> list[str]:
    eff = shown.effects
    issues = []
    for kind, value in (("flicker", eff.flicker), ("noise", eff.noise), ("blur", eff.blur)):
        if value:
            issues.append(f"{_style_word(value, kind)} {kind}")
    return issues


def _rating(dimension: str, score: SubScore, issues: list[str], rng: np.random.Generator) -> str:
    label = dimension.capitalize()
    if score is None:
        return f"{label}: not applicable, the prompt does not ask for any camera work -> N/A."
    if score == 2:
        reason = _pick(rng, ("everything matches the prompt", "no problems here", "exactly as asked"))
    else:
        reason = "; ".join(issues) if issues else "there are visible flaws"
    return f"{label}: {reason} -> {_pick(rng, _VERDICT[score])}."


def _overall_sentence(scores: Mapping[str, SubScore], overall: float, rng: np.random.Generator) -> str:
    primary = [scores[d] for d in PRIMARY_DIMENSIONS]
    if primary.count(0) == 2:
        band = "both primary dimensions fail"
    elif 0 in primary:
        band = "one primary dimension fails"
    elif 1 in primary:
        band = "a primary dimension has a minor flaw"
    elif overall < 5:
        band = "the primary dimensions are perfect and only secondary ones have flaws"
    else:
        band = "every dimension is perfect"
    opening = _pick(rng, ("Overall:", "In total:", "Summing up:"))
    return f"{opening} {band}, so the overall score is {overall:.2f}."


def annotate_cot(
    prompt: str,
    shown: Scene,
    subscores: Mapping[str, SubScore],
    rng: np.random.Generator,
    *,
    brief: bool = False,
) -> str:
    """A chain of thought for a video of ``shown`` (the scene as rendered) judged against ``prompt``.

    ``subscores`` are the ground truth (:func:`toyworld.defects.ground_truth`); the answer block carries exactly
    these and their overall score. ``brief`` keeps only the per-dimension ratings and the answer (for tiny models
    with short contexts).
    """
    asked = parse_prompt(prompt)
    scores = {d: subscores[d] for d in DIMENSIONS}
    overall = overall_from_subscores(scores)
    issues = {
        "subject": _subject_issues(shown, asked, rng),
        "dynamics": _dynamics_issues(shown, asked, rng),
        "camera": _camera_issues(shown, asked),
        "environment": _environment_issues(shown, asked),
        "style": _style_issues(shown),
    }
    ratings = [_rating(d, scores[d], issues[d], rng) for d in DIMENSIONS]
    answer = format_answer(scores, overall)
    if brief:
        return " ".join(ratings) + "\n" + answer
    titles = [_pick(rng, options) for options in _STAGE_TITLES]
    return "\n".join(
        [
            titles[0],
            _expectations(asked, rng),
            titles[1],
            _observations(shown, asked, rng),
            titles[2],
            *ratings,
            _overall_sentence(scores, overall, rng),
            answer,
        ]
    )


def annotate_analysis(analysis: Analysis, rng: np.random.Generator) -> str:
    """A brief chain of thought (ratings with reasons, then the answer block) from an analyzer measurement.

    For videos whose scene is unknown (a generator's samples), the analyzer is the annotator: each rating gives the
    analyzer's findings for its dimension as the reason, and the answer carries the analyzer's sub-scores.
    """
    scores = {d: analysis.subscores[d] for d in DIMENSIONS}
    issues: dict[str, list[str]] = {d: [] for d in DIMENSIONS}
    for finding in analysis.findings:
        dimension, _, text = finding.partition(": ")
        issues[dimension].append(text)
    ratings = [_rating(d, scores[d], issues[d], rng) for d in DIMENSIONS]
    return " ".join(ratings) + "\n" + format_answer(scores, overall_from_subscores(scores))


#: Cells per image side of the positions a track CoT writes (one digit each for x and y).
TRACK_GRID = 10
#: The CoT words of the style levels (analyzer grade 2, 1, 0).
_LEVEL_WORDS = {2: "none", 1: "minor", 0: "strong"}


def track_text(
    positions: Sequence[tuple[float, float]], frames_per_slice: int = 2, grid: int = TRACK_GRID
) -> str:
    """An object's track as one ``xy`` cell per temporal slice: positions (fractions of the frame, NaN where not
    visible) averaged over each run of ``frames_per_slice`` frames and cut to a ``grid`` x ``grid`` raster; ``--``
    for a slice where the object is not visible.

    Qwen-VL's vision tower merges ``temporal_patch_size`` consecutive frames into one slice of tokens, so one cell
    per slice is what the judge can read from its tokens.
    """
    points = np.asarray(positions, dtype=float).reshape(-1, 2)
    cells = []
    for start in range(0, len(points), frames_per_slice):
        chunk = points[start : start + frames_per_slice]
        chunk = chunk[np.isfinite(chunk[:, 0])]
        if len(chunk) == 0:
            cells.append("--")
            continue
        x, y = np.clip((chunk.mean(axis=0) * grid).astype(int), 0, grid - 1)
        cells.append(f"{x}{y}")
    return " ".join(cells)


def annotate_track(analysis: Analysis, prompt: str, frames_per_slice: int = 2) -> str:
    """A track-then-judge chain of thought from an analyzer measurement of a video judged against ``prompt``.

    Per asked object (matched to a detected one as :func:`toyworld.analyzer.score` matches them): its track
    (:func:`track_text`), then seen-vs-asked shape, size and motion and the faults seen (``jitters``, ``split``,
    ``fragments``); then unrequested objects, the background, the camera and the style levels; then the answer block
    with the analyzer's sub-scores. For example::

        cyan bar: 13 11 11 14 16, circle vs bar, large vs large, down vs left, jitters. background checkered brown vs
        striped brown. camera static vs static, shaking. flicker none, noise none, blur minor.
        <answer>{...}</answer>

    Deterministic: the same measurement gives the same text, so the judge learns a reading, not a phrasing.
    """
    spec = parse_prompt(prompt)
    matched = match_objects(spec, analysis.objects)
    parts = []
    for obj, det in zip(spec.objects, matched):
        if det is None:
            parts.append(f"{obj.color} {obj.shape}: missing.")
            continue
        bits = [track_text(det.positions, frames_per_slice)]
        if det.color != obj.color:
            bits.append(f"shown {det.color}")
        bits += [
            f"{det.shape or 'unclear'} vs {obj.shape}",
            f"{det.size or 'unclear'} vs {obj.size or 'any'}",
            f"{det.motion} vs {obj.motion}",
        ]
        faults = (
            ("jitters", det.jitter >= JITTER_RESIDUAL),
            ("split", det.split),
            ("fragments", det.fragments >= FRAGMENTS_PER_FRAME),
        )
        bits += [word for word, seen in faults if seen]
        parts.append(f"{obj.color} {obj.shape}: " + ", ".join(bits) + ".")
    parts += [f"extra {det.color}." for det in analysis.objects if det not in matched]
    parts.append(f"background {analysis.texture} {analysis.background} vs {spec.texture} {spec.background}.")
    shaking = ", shaking" if analysis.shake >= SHAKE_RESIDUAL else ""
    parts.append(f"camera {analysis.camera} vs {spec.camera or 'any'}{shaking}.")
    measured = {"flicker": analysis.flicker, "noise": analysis.noise, "sharpness": analysis.sharpness}
    levels = [f"{name} {_LEVEL_WORDS[g]}" for name, g in style_grades(measured).items() if g is not None]
    parts.append(", ".join(levels) + ".")
    scores = {d: analysis.subscores[d] for d in DIMENSIONS}
    return " ".join(parts) + "\n" + format_answer(scores, analysis.overall)
