"""Scenes of the toy world: the vocabulary, the geometry and seeded sampling.

A scene is what one video shows: one or two filled shapes, each with a colour, size and motion, on a plain or
textured background, seen by a static or panning camera. A :class:`SceneSpec` holds what a prompt can say about it;
a :class:`Scene` adds the layout (where each object sits mid-clip) and the rendering :class:`Effects` that defects
introduce (flicker, noise, blur, shake, jitter, fragments, split or hidden objects).

Geometry is expressed in fractions of the shorter frame side ``S`` so every frame size gives the same world. Objects
travel ``OBJECT_TRAVEL * S`` pixels over the whole clip (whatever the frame count), a pan shifts the picture by
``PAN_TRAVEL * S``. Image coordinates: x grows to the right, y grows downwards.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from descore.errors import ConfigError

logger = logging.getLogger(__name__)

RGB = tuple[float, float, float]

#: Object colours (linear RGB in [0, 1]), far apart from each other and from every background tone.
OBJECT_COLORS: dict[str, RGB] = {
    "red": (0.92, 0.12, 0.12),
    "orange": (1.0, 0.55, 0.05),
    "yellow": (0.95, 0.9, 0.1),
    "green": (0.15, 0.78, 0.2),
    "cyan": (0.1, 0.85, 0.9),
    "blue": (0.15, 0.3, 1.0),
    "purple": (0.72, 0.2, 0.92),
}

#: Background colours as (base tone, shade tone); textures alternate the two tones.
BACKGROUND_COLORS: dict[str, tuple[RGB, RGB]] = {
    "gray": ((0.5, 0.5, 0.5), (0.68, 0.68, 0.68)),
    "black": ((0.05, 0.05, 0.05), (0.25, 0.25, 0.25)),
    "white": ((0.95, 0.95, 0.95), (0.8, 0.8, 0.8)),
    "navy": ((0.08, 0.1, 0.38), (0.2, 0.24, 0.55)),
    "brown": ((0.42, 0.26, 0.12), (0.58, 0.4, 0.22)),
}

SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "bar", "cross")
#: Half extents (x, y) of each shape in units of its size (the size is its longest extent).
SHAPE_EXTENTS: dict[str, tuple[float, float]] = {
    "square": (0.5, 0.5),
    "circle": (0.5, 0.5),
    "triangle": (0.5, 0.5),
    "bar": (0.5, 0.2),
    "cross": (0.5, 0.5),
}
#: Object sizes as fractions of the shorter frame side.
SIZES: dict[str, float] = {"small": 0.2, "medium": 0.28, "large": 0.36}
#: The size an object is drawn at when its prompt does not say.
DEFAULT_SIZE = "medium"
#: Unit motion directions in image coordinates.
MOTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
    "still": (0, 0),
}
TEXTURES: tuple[str, ...] = ("plain", "striped", "checkered")
#: Camera settings and the direction the picture content moves in x (a camera panning left moves content right).
CAMERAS: dict[str, int] = {"static": 0, "pan_left": 1, "pan_right": -1}

#: Distance an object travels over the clip, as a fraction of the shorter side.
OBJECT_TRAVEL = 0.4
#: Distance a pan shifts the picture over the clip, as a fraction of the shorter side.
PAN_TRAVEL = 0.2
#: Each half of a split object is pushed this far sideways (fraction of the shorter side).
SPLIT_SHIFT = 0.05
#: Radius of a fragment (fraction of the shorter side).
FRAGMENT_RADIUS = 0.04
#: Smallest gap kept between two objects when they are placed (fraction of the shorter side).
PLACEMENT_MARGIN = 0.04
MAX_OBJECTS = 2
MAX_FRAGMENTS = 8
MIN_SIDE = 32
MAX_SIDE = 1024
MIN_FRAMES = 3
MAX_FRAMES = 1025


def _check_choice(value: object, choices: Sequence[str] | Mapping[str, Any], what: str) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; expected one of {sorted(choices)}")


@dataclass(frozen=True)
class WorldConfig:
    """Video geometry of the toy world: frame count, frame size and playback rate.

    Nine frames fit both Wan's 4k+1 and LTX's 8k+1 frame rules; 64x64 keeps rendering and tiny models fast.
    """

    num_frames: int = 9
    height: int = 64
    width: int = 64
    fps: int = 8

    def __post_init__(self) -> None:
        for name, low, high in (
            ("num_frames", MIN_FRAMES, MAX_FRAMES),
            ("height", MIN_SIDE, MAX_SIDE),
            ("width", MIN_SIDE, MAX_SIDE),
            ("fps", 1, 240),
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                or not low <= value <= high
            ):
                raise ConfigError(f"toy world {name} must be an integer in [{low}, {high}], got {value!r}")

    @property
    def side(self) -> int:
        """The shorter frame side ``S``, the unit of all toy-world geometry."""
        return min(self.height, self.width)

    @property
    def object_speed(self) -> float:
        """Pixels per frame of a moving object."""
        return OBJECT_TRAVEL * self.side / (self.num_frames - 1)

    @property
    def pan_speed(self) -> float:
        """Pixels per frame of a panning camera."""
        return PAN_TRAVEL * self.side / (self.num_frames - 1)


@dataclass(frozen=True)
class ObjectSpec:
    """What a prompt says about one object. ``size`` None means the prompt does not say (drawn medium)."""

    shape: str
    color: str
    size: str | None
    motion: str

    def __post_init__(self) -> None:
        _check_choice(self.shape, SHAPES, "shape")
        _check_choice(self.color, OBJECT_COLORS, "colour")
        if self.size is not None:
            _check_choice(self.size, SIZES, "size")
        _check_choice(self.motion, MOTIONS, "motion")

    def size_pixels(self, config: WorldConfig) -> float:
        """The drawn size (longest extent) in pixels."""
        return SIZES[self.size or DEFAULT_SIZE] * config.side


@dataclass(frozen=True)
class SceneSpec:
    """What a prompt says about a scene. ``camera`` None means the prompt does not mention the camera."""

    objects: tuple[ObjectSpec, ...]
    background: str
    texture: str = "plain"
    camera: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))
        if not 1 <= len(self.objects) <= MAX_OBJECTS:
            raise ConfigError(f"a toy scene has 1 to {MAX_OBJECTS} objects, got {len(self.objects)}")
        colors = [o.color for o in self.objects]
        if len(set(colors)) != len(colors):
            raise ConfigError(f"the objects of a toy scene must have distinct colours, got {colors}")
        _check_choice(self.background, BACKGROUND_COLORS, "background colour")
        _check_choice(self.texture, TEXTURES, "background texture")
        if self.camera is not None:
            _check_choice(self.camera, CAMERAS, "camera")


@dataclass(frozen=True)
class ObjectEffects:
    """Rendering faults of one object: hidden, split in two halves, jittering (amplitude in S), fragments per frame."""

    visible: bool = True
    split: bool = False
    jitter: float = 0.0
    fragments: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.jitter <= 1.0:
            raise ConfigError(
                f"object jitter must be in [0, 1] (a share of the frame side), got {self.jitter!r}"
            )
        if not 0 <= self.fragments <= MAX_FRAGMENTS:
            raise ConfigError(
                f"fragments per frame must be between 0 and {MAX_FRAGMENTS}, got {self.fragments!r}"
            )


@dataclass(frozen=True)
class Effects:
    """Rendering faults of a whole video. ``objects`` is empty (no object fault) or has one entry per object.

    ``flicker``: per-frame brightness swing (0-1); ``noise``: Gaussian noise sigma (0-1 pixel values);
    ``blur``: Gaussian blur sigma and ``shake``: camera shake amplitude, both as fractions of the shorter side.
    """

    objects: tuple[ObjectEffects, ...] = ()
    flicker: float = 0.0
    noise: float = 0.0
    blur: float = 0.0
    shake: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))
        for name in ("flicker", "noise", "blur", "shake"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"effect {name} must be in [0, 1], got {getattr(self, name)!r}")

    def for_object(self, index: int) -> ObjectEffects:
        """The effects of object ``index`` (defaults when none were set)."""
        return self.objects[index] if self.objects else ObjectEffects()


@dataclass(frozen=True)
class Scene:
    """One video of the toy world: its content, the layout and the rendering faults.

    ``centers`` holds each object's on-screen centre at mid-clip, as fractions of (width, height). ``seed`` drives
    the per-frame randomness of the effects (noise, jitter, fragments, flicker, shake), so a scene always renders
    to the same pixels.
    """

    spec: SceneSpec
    centers: tuple[tuple[float, float], ...]
    effects: Effects = field(default_factory=Effects)
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "centers", tuple((float(x), float(y)) for x, y in self.centers))
        if len(self.centers) != len(self.spec.objects):
            raise ConfigError(
                f"a scene with {len(self.spec.objects)} object(s) needs as many centres, got {self.centers}"
            )
        if self.effects.objects and len(self.effects.objects) != len(self.spec.objects):
            raise ConfigError("scene effects must list one entry per object (or none)")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (the dataset manifest stores it)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scene:
        """The scene :meth:`to_dict` described."""
        try:
            spec = data["spec"]
            effects = data.get("effects", {})
            return cls(
                spec=SceneSpec(
                    objects=tuple(ObjectSpec(**o) for o in spec["objects"]),
                    background=spec["background"],
                    texture=spec.get("texture", "plain"),
                    camera=spec.get("camera"),
                ),
                centers=tuple(tuple(c) for c in data["centers"]),
                effects=Effects(
                    objects=tuple(ObjectEffects(**o) for o in effects.get("objects", ())),
                    **{k: v for k, v in effects.items() if k != "objects"},
                ),
                seed=int(data.get("seed", 0)),
            )
        except (KeyError, TypeError) as err:
            raise ConfigError(f"not a toy-world scene description ({err}): {dict(data)!r}") from err


def object_extent(obj: ObjectSpec, effects: ObjectEffects, config: WorldConfig) -> tuple[float, float]:
    """Half extents (x, y) in pixels of an object as drawn (a split object is wider)."""
    ex, ey = SHAPE_EXTENTS[obj.shape]
    size = obj.size_pixels(config)
    hx = ex * size + (SPLIT_SHIFT * config.side if effects.split else 0.0)
    return hx, ey * size


def object_path(motion: str, camera: str | None, config: WorldConfig) -> np.ndarray:
    """On-screen offsets (T, 2) in pixels of an object from its mid-clip centre: its own motion plus the pan."""
    t = np.arange(config.num_frames, dtype=np.float64) - (config.num_frames - 1) / 2.0
    mx, my = MOTIONS[motion]
    pan = CAMERAS[camera] if camera is not None else 0
    vx = mx * config.object_speed + pan * config.pan_speed
    vy = my * config.object_speed
    return np.stack([vx * t, vy * t], axis=1)


def _feasible_range(
    low_offset: float, high_offset: float, half: float, length: int
) -> tuple[float, float] | None:
    low, high = half - low_offset, length - half - high_offset
    return (low, high) if low <= high else None


def layout_fits(
    spec: SceneSpec,
    centers_px: Sequence[tuple[float, float]],
    config: WorldConfig,
    object_effects: Sequence[ObjectEffects] | None = None,
) -> bool:
    """Whether objects at these mid-clip centres (pixels) stay inside the frame and apart in every frame."""
    effects = list(object_effects) if object_effects else [ObjectEffects()] * len(spec.objects)
    boxes = []
    for obj, eff, (cx, cy) in zip(spec.objects, effects, centers_px):
        hx, hy = object_extent(obj, eff, config)
        path = object_path(obj.motion, spec.camera, config) + np.array([cx, cy])
        if path[:, 0].min() - hx < -1e-6 or path[:, 0].max() + hx > config.width + 1e-6:
            return False
        if path[:, 1].min() - hy < -1e-6 or path[:, 1].max() + hy > config.height + 1e-6:
            return False
        boxes.append((path, hx, hy, eff.visible))
    margin = PLACEMENT_MARGIN * config.side
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            (pi, hxi, hyi, vi), (pj, hxj, hyj, vj) = boxes[i], boxes[j]
            if not (vi and vj):
                continue
            apart_x = np.abs(pi[:, 0] - pj[:, 0]) >= hxi + hxj + margin
            apart_y = np.abs(pi[:, 1] - pj[:, 1]) >= hyi + hyj + margin
            if not np.all(apart_x | apart_y):
                return False
    return True


def place_objects(
    spec: SceneSpec,
    rng: np.random.Generator,
    config: WorldConfig,
    object_effects: Sequence[ObjectEffects] | None = None,
    tries: int = 200,
) -> tuple[tuple[float, float], ...] | None:
    """Random mid-clip centres (fractions of width, height) that keep every object in frame and apart, or None."""
    effects = list(object_effects) if object_effects else [ObjectEffects()] * len(spec.objects)
    ranges = []
    for obj, eff in zip(spec.objects, effects):
        hx, hy = object_extent(obj, eff, config)
        path = object_path(obj.motion, spec.camera, config)
        rx = _feasible_range(path[:, 0].min(), path[:, 0].max(), hx, config.width)
        ry = _feasible_range(path[:, 1].min(), path[:, 1].max(), hy, config.height)
        if rx is None or ry is None:
            return None
        ranges.append((rx, ry))
    for _ in range(tries):
        centers = [(rng.uniform(*rx), rng.uniform(*ry)) for rx, ry in ranges]
        if layout_fits(spec, centers, config, effects):
            return tuple((x / config.width, y / config.height) for x, y in centers)
    return None


def sample_spec(
    rng: np.random.Generator,
    *,
    num_objects: int | None = None,
    two_object_probability: float = 0.3,
    camera_probability: float = 0.6,
) -> SceneSpec:
    """A random scene description. Pans are only drawn over textured backgrounds, where a pan can be seen."""
    if num_objects is None:
        num_objects = 2 if rng.random() < two_object_probability else 1
    if not 1 <= num_objects <= MAX_OBJECTS:
        raise ConfigError(f"num_objects must be between 1 and {MAX_OBJECTS}, got {num_objects}")
    colors = rng.choice(list(OBJECT_COLORS), size=num_objects, replace=False)
    objects = tuple(
        ObjectSpec(
            shape=str(rng.choice(SHAPES)),
            color=str(color),
            size=str(rng.choice(list(SIZES))),
            motion=str(rng.choice(list(MOTIONS))),
        )
        for color in colors
    )
    background = str(rng.choice(list(BACKGROUND_COLORS)))
    texture = str(rng.choice(TEXTURES))
    camera = None
    if rng.random() < camera_probability:
        camera = str(rng.choice(list(CAMERAS))) if texture != "plain" else "static"
    return SceneSpec(objects=objects, background=background, texture=texture, camera=camera)


def sample_scene(
    rng: np.random.Generator,
    config: WorldConfig | None = None,
    *,
    spec: SceneSpec | None = None,
    **spec_options: Any,
) -> Scene:
    """A random defect-free scene: a sampled (or given) spec, a layout that fits, and a seed for its effects."""
    config = config or WorldConfig()
    for _ in range(100):
        candidate = spec if spec is not None else sample_spec(rng, **spec_options)
        centers = place_objects(candidate, rng, config)
        if centers is not None:
            return Scene(spec=candidate, centers=centers, seed=int(rng.integers(2**31)))
        if spec is not None:
            break
    raise ConfigError(
        f"cannot place the objects of {spec or 'the sampled scenes'} inside a "
        f"{config.width}x{config.height} frame over {config.num_frames} frames"
    )
