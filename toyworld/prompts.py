"""Prompts of the toy world: writing one from a scene, and reading one back into what it asks for.

:func:`write_prompt` picks one of a few phrasings for every attribute ("a big red disc sliding to the left on a
striped gray background, the camera pans right"); :func:`parse_prompt` reads any of them back into a
:class:`~toyworld.scene.SceneSpec`, which is how the analyzer learns what a video was supposed to show.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from descore.errors import ConfigError
from toyworld.scene import ObjectSpec, Scene, SceneSpec

SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little", "tiny"),
    "medium": ("medium", "medium-sized", "mid-sized"),
    "large": ("large", "big", "huge"),
}
COLOR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red",),
    "orange": ("orange",),
    "yellow": ("yellow",),
    "green": ("green",),
    "cyan": ("cyan", "turquoise"),
    "blue": ("blue",),
    "purple": ("purple", "violet"),
}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "square": ("square", "box"),
    "circle": ("circle", "disc", "ball"),
    "triangle": ("triangle",),
    "bar": ("bar", "horizontal bar", "stick"),
    "cross": ("cross", "plus sign"),
}
MOTION_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("moving left", "sliding to the left", "drifting leftward", "travelling left"),
    "right": ("moving right", "sliding to the right", "drifting rightward", "travelling right"),
    "up": ("moving up", "rising", "drifting upward", "floating up"),
    "down": ("moving down", "falling", "sinking", "dropping down"),
    "still": ("standing still", "staying in place", "resting motionless", "not moving"),
}
BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {
    "gray": ("gray", "grey"),
    "black": ("black",),
    "white": ("white",),
    "navy": ("navy", "dark blue"),
    "brown": ("brown",),
}
#: An empty phrasing means the texture goes unsaid; a prompt that names no texture asks for a plain background.
TEXTURE_WORDS: dict[str, tuple[str, ...]] = {
    "plain": ("plain", "solid", ""),
    "striped": ("striped", "stripy", "vertically striped"),
    "checkered": ("checkered", "chequered", "checkerboard"),
}
CAMERA_WORDS: dict[str, tuple[str, ...]] = {
    "static": ("static camera", "the camera stays still", "fixed camera", "shot on a locked-off camera"),
    "pan_left": ("the camera pans left", "camera panning left", "with a slow pan to the left"),
    "pan_right": ("the camera pans right", "camera panning right", "with a slow pan to the right"),
}
_BACKGROUND_TEMPLATES = (
    "on {a} {texture} {color} background",
    "against {a} {texture} {color} backdrop",
    "over {a} {texture} {color} background",
    "in front of {a} {texture} {color} background",
)
_OPENINGS = ("", "a video of ", "footage of ", "a clip showing ")
_JOINERS = (" and ", ", and ", " while ")
_BACKGROUND_RE = re.compile(
    r"\b(?:on|against|over|in front of) an? (?P<body>[a-z\- ]*?)\s*\b(?:background|backdrop)\b"
)
_OBJECT_SPLIT_RE = re.compile(r"\band\b|\bwhile\b")
_FILLER = {"a", "an", "video", "of", "footage", "clip", "showing", "the", "that", "is", "one", "with"}


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _object_phrase(obj: ObjectSpec, rng: np.random.Generator) -> str:
    words = [_pick(rng, COLOR_WORDS[obj.color]), _pick(rng, SHAPE_WORDS[obj.shape])]
    if obj.size is not None:
        words.insert(0, _pick(rng, SIZE_WORDS[obj.size]))
    return f"{_article(words[0])} {' '.join(words)} {_pick(rng, MOTION_WORDS[obj.motion])}"


def write_prompt(spec: SceneSpec | Scene, rng: np.random.Generator) -> str:
    """A prompt for the scene (a spec, or a scene whose spec is used), with a random phrasing of every attribute."""
    if isinstance(spec, Scene):
        spec = spec.spec
    objects = _pick(rng, _JOINERS).join(_object_phrase(o, rng) for o in spec.objects)
    texture = _pick(rng, TEXTURE_WORDS[spec.texture])
    color = _pick(rng, BACKGROUND_WORDS[spec.background])
    lead = texture or color
    background = _pick(rng, _BACKGROUND_TEMPLATES).format(a=_article(lead), texture=texture, color=color)
    text = f"{_pick(rng, _OPENINGS)}{objects} {' '.join(background.split())}"
    if spec.camera is not None:
        text += f", {_pick(rng, CAMERA_WORDS[spec.camera])}"
    return text[0].upper() + text[1:] + "."


def _normalise(prompt: str) -> str:
    return " ".join(re.sub(r"[^a-z\- ]", " ", prompt.lower()).split())


def _find(text: str, table: Mapping[str, tuple[str, ...]]) -> list[tuple[str, str]]:
    """(attribute value, phrase) of every non-overlapping phrase of ``table`` in ``text``, longest phrases first."""
    phrases = sorted(((p, v) for v, ps in table.items() for p in ps if p), key=lambda pv: -len(pv[0]))
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(p) for p, _ in phrases) + r")\b")
    lookup = dict(phrases)
    return [(lookup[m.group(0)], m.group(0)) for m in pattern.finditer(text)]


def _one(
    text: str, table: Mapping[str, tuple[str, ...]], what: str, prompt: str, where: str, required: bool = True
) -> str | None:
    found = {value for value, _ in _find(text, table)}
    if len(found) > 1:
        raise ConfigError(f"prompt {prompt!r} names several {what}s ({sorted(found)}) in {where!r}")
    if not found:
        if not required:
            return None
        known = sorted(p for ps in table.values() for p in ps if p)
        raise ConfigError(f"prompt {prompt!r}: no {what} in {where!r}; the toy world knows {known}")
    return found.pop()


def _strip(text: str, table: Mapping[str, tuple[str, ...]]) -> str:
    for _, phrase in _find(text, table):
        text = re.sub(r"\b" + re.escape(phrase) + r"\b", " ", text, count=1)
    return text


def parse_prompt(prompt: str) -> SceneSpec:
    """What a toy-world prompt asks for. Raises ConfigError naming the prompt when it cannot be read.

    Shape, colour and motion of every object and the background colour are required; an unsaid size, texture or
    camera is read as "not specified" (size None, plain texture, camera None).
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError(f"a toy-world prompt must be a non-empty string, got {prompt!r}")
    text = _normalise(prompt)
    camera = _one(text, CAMERA_WORDS, "camera setting", prompt, prompt, required=False)
    text = _strip(text, CAMERA_WORDS)
    match = _BACKGROUND_RE.search(text)
    if match is None:
        raise ConfigError(f"prompt {prompt!r} names no background (e.g. 'on a gray background')")
    body = match.group("body")
    background = _one(body, BACKGROUND_WORDS, "background colour", prompt, match.group(0))
    texture = (
        _one(body, TEXTURE_WORDS, "background texture", prompt, match.group(0), required=False) or "plain"
    )
    leftover = _strip(_strip(body, BACKGROUND_WORDS), TEXTURE_WORDS).split()
    if leftover:
        raise ConfigError(f"prompt {prompt!r}: unknown background word(s) {leftover}")
    text = text[: match.start()] + " " + text[match.end() :]
    chunks = [c for c in (" ".join(part.split()) for part in _OBJECT_SPLIT_RE.split(text)) if c]
    if not chunks:
        raise ConfigError(f"prompt {prompt!r} describes no object")
    objects = []
    for chunk in chunks:
        attributes = {}
        rest = chunk
        for name, table in (
            ("motion", MOTION_WORDS),
            ("shape", SHAPE_WORDS),
            ("colour", COLOR_WORDS),
            ("size", SIZE_WORDS),
        ):
            attributes[name] = _one(rest, table, name, prompt, chunk, required=name != "size")
            rest = _strip(rest, table)
        unknown = [w for w in rest.split() if w not in _FILLER]
        if unknown:
            raise ConfigError(f"prompt {prompt!r}: unknown word(s) {unknown} in {chunk!r}")
        objects.append(
            ObjectSpec(
                shape=attributes["shape"],
                color=attributes["colour"],
                size=attributes["size"],
                motion=attributes["motion"],
            )
        )
    return SceneSpec(objects=tuple(objects), background=background, texture=texture, camera=camera)
