"""Vectorised rendering of toy-world scenes into videos.

:func:`render` turns a batch of :class:`~toyworld.scene.Scene` objects into a float32 array ``(B, T, 3, H, W)`` in
[0, 1]. Shapes are drawn from signed distance functions with one-pixel anti-aliasing, textures are box-filtered, and
whole chunks of videos are computed with numpy broadcasting, so thousands of videos render in seconds.

Effects are applied in the order a generator's faults would stack: scene content (with split, hidden, jittering
objects, fragments and camera shake), then blur, then flicker, then noise.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import numpy as np

from toyworld.scene import (
    BACKGROUND_COLORS,
    CAMERAS,
    FRAGMENT_RADIUS,
    MAX_FRAGMENTS,
    OBJECT_COLORS,
    SHAPE_EXTENTS,
    SHAPES,
    SPLIT_SHIFT,
    TEXTURES,
    Scene,
    WorldConfig,
    object_extent,
    object_path,
)

logger = logging.getLogger(__name__)

#: Widths of the alternating bands of textured backgrounds, as fractions of the shorter side. Uneven widths keep
#: the pattern aperiodic over a pan, so the pan's direction and speed are unambiguous.
STRIPE_WIDTHS: tuple[float, ...] = (0.11, 0.16, 0.09, 0.13, 0.1, 0.18, 0.12, 0.09, 0.15, 0.1, 0.14, 0.11)
#: Offset of the horizontal bands of a checkered background, so its two band patterns differ.
CHECKER_ROW_OFFSET = 0.37
#: Range of a flicker's per-frame swing, as fractions of its nominal strength.
FLICKER_SWING = (0.7, 1.0)
#: Fragments sit this far beyond the object's corner radius (fractions of the shorter side).
FRAGMENT_DISTANCE = (0.08, 0.18)

_SHAPE_INDEX = {name: i for i, name in enumerate(SHAPES)}


def shape_sdf(shape: str, dx: np.ndarray, dy: np.ndarray, size: np.ndarray | float) -> np.ndarray:
    """Signed distance in pixels (negative inside) of a shape of the given size centred at the origin.

    ``dx`` and ``dy`` are pixel offsets from the shape's centre (broadcastable); ``size`` is the longest extent.
    """
    half = np.asarray(size, dtype=np.float32) / 2.0
    if shape == "circle":
        return np.sqrt(dx * dx + dy * dy) - half
    if shape == "square":
        return _box_sdf(dx, dy, half, half)
    if shape == "bar":
        return _box_sdf(dx, dy, half, half * np.float32(SHAPE_EXTENTS["bar"][1] / SHAPE_EXTENTS["bar"][0]))
    if shape == "cross":
        arm = half / 3.0
        return np.minimum(_box_sdf(dx, dy, half, arm), _box_sdf(dx, dy, arm, half))
    if shape == "triangle":
        # Apex at the top centre, base at the bottom: the intersection of three half-planes.
        norm = np.float32(1.0 / np.sqrt(5.0))
        left = (-2.0 * dx - dy - half) * norm
        right = (2.0 * dx - dy - half) * norm
        return np.maximum(np.maximum(left, right), dy - half)
    raise ValueError(f"unknown shape {shape!r}")


def _box_sdf(dx: np.ndarray, dy: np.ndarray, hx: np.ndarray | float, hy: np.ndarray | float) -> np.ndarray:
    qx = np.abs(dx) - hx
    qy = np.abs(dy) - hy
    outside = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0.0)


def coverage(sdf: np.ndarray) -> np.ndarray:
    """Pixel coverage in [0, 1] from a signed distance (one-pixel anti-aliased edge)."""
    return np.clip(0.5 - sdf, 0.0, 1.0)


def shape_mask(shape: str, size: float, center: tuple[float, float], height: int, width: int) -> np.ndarray:
    """Coverage (H, W) of one shape drawn at a pixel centre: what the analyzer compares observed masks against."""
    xs = np.arange(width, dtype=np.float32) + 0.5 - center[0]
    ys = np.arange(height, dtype=np.float32) + 0.5 - center[1]
    return coverage(shape_sdf(shape, xs[None, :], ys[:, None], size))


@functools.lru_cache(maxsize=16)
def _band_integral(side: int, offset: float) -> tuple[np.ndarray, np.ndarray]:
    """Knots (positions, running integral of the shade indicator) of the band pattern along one axis."""
    widths = np.array(STRIPE_WIDTHS) * side
    start = -3.0 * side - offset * side
    edges = [start]
    while edges[-1] < 5.0 * side:
        edges.extend(edges[-1] + np.cumsum(widths))
    edges = np.array(edges)
    shade = np.arange(len(edges) - 1) % 2  # band i spans edges[i]..edges[i+1]
    integral = np.concatenate([[0.0], np.cumsum(shade * np.diff(edges))])
    return edges, integral


def band_pattern(u: np.ndarray, side: int, offset: float = 0.0) -> np.ndarray:
    """Shade fraction in [0, 1] of one-pixel-wide cells centred at positions ``u`` (box-filtered bands)."""
    edges, integral = _band_integral(side, offset)
    flat = u.ravel()
    value = np.interp(flat + 0.5, edges, integral) - np.interp(flat - 0.5, edges, integral)
    return value.reshape(u.shape).astype(np.float32)


def gaussian_blur(frames: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (sigma in pixels) of (..., H, W) arrays with reflected borders."""
    radius = max(1, int(np.ceil(3.0 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    for axis in (-1, -2):
        pad = [(0, 0)] * frames.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(frames, pad, mode="reflect")
        length = frames.shape[axis]
        out = np.zeros_like(frames)
        for k, w in enumerate(taps):
            out += w * np.take(padded, np.arange(k, k + length), axis=axis)
        frames = out
    return frames


class _Draws:
    """Per-scene random draws, taken from the scene's own seed in a fixed order."""

    def __init__(self, scene: Scene, config: WorldConfig):
        rng = np.random.default_rng(scene.seed)
        t, side = config.num_frames, config.side
        n = len(scene.spec.objects)
        self.jitter = rng.uniform(-1.0, 1.0, size=(n, t, 2)) * side
        # Camera shake is a side-to-side wobble, so it shows against vertical stripes as well as against a checker.
        self.shake = rng.uniform(-1.0, 1.0, size=(t, 2)) * scene.effects.shake * side * np.array([1.0, 0.0])
        self.fragment_angle = rng.uniform(0.0, 2 * np.pi, size=(n, t, 1)) + rng.uniform(
            -0.3, 0.3, size=(n, t, MAX_FRAGMENTS)
        )
        self.fragment_distance = rng.uniform(*FRAGMENT_DISTANCE, size=(n, t, MAX_FRAGMENTS)) * side
        # Every other frame swings brighter or darker (random sign); the frames between keep their exposure.
        sign = np.where(rng.random(t) < 0.5, 1.0, -1.0) * (np.arange(t) % 2 == 1)
        self.flicker = sign * rng.uniform(*FLICKER_SWING, size=t) * scene.effects.flicker
        self.noise_seed = int(rng.integers(2**31))


def render(scenes: Sequence[Scene], config: WorldConfig | None = None, *, chunk_size: int = 64) -> np.ndarray:
    """Render scenes into videos: float32 ``(B, T, 3, H, W)`` in [0, 1]. The same scenes give the same pixels."""
    config = config or WorldConfig()
    scenes = list(scenes)
    out = np.empty((len(scenes), config.num_frames, 3, config.height, config.width), dtype=np.float32)
    for start in range(0, len(scenes), chunk_size):
        out[start : start + chunk_size] = _render_chunk(scenes[start : start + chunk_size], config)
    return out


def _render_chunk(scenes: list[Scene], config: WorldConfig) -> np.ndarray:
    side = config.side
    draws = [_Draws(s, config) for s in scenes]
    shake = np.stack([d.shake for d in draws]).astype(np.float32)  # (B, T, 2)
    frames = _background(scenes, shake, config)
    xs = np.arange(config.width, dtype=np.float32) + 0.5
    ys = np.arange(config.height, dtype=np.float32) + 0.5
    max_objects = max(len(s.spec.objects) for s in scenes)
    for slot in range(max_objects):
        members = [i for i, s in enumerate(scenes) if slot < len(s.spec.objects)]
        _draw_objects(frames, scenes, draws, members, slot, shake, xs, ys, config)
    _draw_fragments(frames, scenes, draws, shake, xs, ys, config)
    for i, scene in enumerate(scenes):
        effects = scene.effects
        if effects.blur > 0:
            frames[i] = gaussian_blur(frames[i], effects.blur * side)
        if effects.flicker > 0:
            lift = draws[i].flicker.astype(np.float32)[:, None, None, None]
            frames[i] = np.where(lift >= 0, frames[i] + lift * (1.0 - frames[i]), frames[i] * (1.0 + lift))
        if effects.noise > 0:
            noise_rng = np.random.default_rng(draws[i].noise_seed)
            frames[i] += noise_rng.standard_normal(frames[i].shape, dtype=np.float32) * np.float32(
                effects.noise
            )
    np.clip(frames, 0.0, 1.0, out=frames)
    return frames


def _background(scenes: list[Scene], shake: np.ndarray, config: WorldConfig) -> np.ndarray:
    t, h, w, side = config.num_frames, config.height, config.width, config.side
    steps = np.arange(t, dtype=np.float32) - (t - 1) / 2.0
    pan = np.array([CAMERAS[s.spec.camera] if s.spec.camera else 0 for s in scenes], dtype=np.float32)
    content_x = pan[:, None] * config.pan_speed * steps[None, :] + shake[:, :, 0]  # (B, T)
    content_y = shake[:, :, 1]
    u = np.arange(w, dtype=np.float32)[None, None, :] + 0.5 - content_x[:, :, None]  # world x (B, T, W)
    v = np.arange(h, dtype=np.float32)[None, None, :] + 0.5 - content_y[:, :, None]  # world y (B, T, H)
    cols = band_pattern(u, side)[:, :, None, :]
    rows = band_pattern(v, side, CHECKER_ROW_OFFSET)[:, :, :, None]
    texture = np.array([TEXTURES.index(s.spec.texture) for s in scenes])
    tone = np.zeros((len(scenes), t, h, w), dtype=np.float32)
    striped = texture == TEXTURES.index("striped")
    checkered = texture == TEXTURES.index("checkered")
    tone[striped] = np.broadcast_to(cols[striped], (int(striped.sum()), t, h, w))
    tone[checkered] = cols[checkered] + rows[checkered] - 2.0 * cols[checkered] * rows[checkered]
    base = np.array([BACKGROUND_COLORS[s.spec.background][0] for s in scenes], dtype=np.float32)
    shade = np.array([BACKGROUND_COLORS[s.spec.background][1] for s in scenes], dtype=np.float32)
    return base[:, None, :, None, None] + (shade - base)[:, None, :, None, None] * tone[:, :, None]


def _draw_objects(
    frames: np.ndarray,
    scenes: list[Scene],
    draws: list[_Draws],
    members: list[int],
    slot: int,
    shake: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    config: WorldConfig,
) -> None:
    side = config.side
    centers = np.zeros((len(members), config.num_frames, 2), dtype=np.float32)
    sizes = np.zeros(len(members), dtype=np.float32)
    split = np.zeros(len(members), dtype=bool)
    visible = np.zeros(len(members), dtype=np.float32)
    shapes = np.zeros(len(members), dtype=int)
    colors = np.zeros((len(members), 3), dtype=np.float32)
    for k, i in enumerate(members):
        scene = scenes[i]
        obj, eff = scene.spec.objects[slot], scene.effects.for_object(slot)
        mid = np.array([scene.centers[slot][0] * config.width, scene.centers[slot][1] * config.height])
        path = object_path(obj.motion, scene.spec.camera, config)
        centers[k] = mid + path + draws[i].jitter[slot] * eff.jitter + shake[i]
        sizes[k] = obj.size_pixels(config)
        split[k] = eff.split
        visible[k] = float(eff.visible)
        shapes[k] = _SHAPE_INDEX[obj.shape]
        colors[k] = OBJECT_COLORS[obj.color]
    dx = xs[None, None, None, :] - centers[:, :, 0, None, None]  # (M, T, 1, W)
    dy = ys[None, None, :, None] - centers[:, :, 1, None, None]  # (M, T, H, 1)
    dx, dy = np.broadcast_arrays(dx, dy)
    shift = np.float32(SPLIT_SHIFT * side)
    half_cut = np.ones_like(dx)
    source_dx = dx.copy()
    if split.any():
        # A split object is drawn as its left half pushed left and its right half pushed right.
        sdx = dx[split]
        shifted = np.where(sdx < 0, sdx + shift, sdx - shift)
        source_dx[split] = shifted
        half_cut[split] = np.where(sdx < 0, np.clip(0.5 - shifted, 0, 1), np.clip(0.5 + shifted, 0, 1))
    cov = np.zeros_like(dx)
    for name, index in _SHAPE_INDEX.items():
        sel = shapes == index
        if sel.any():
            cov[sel] = coverage(shape_sdf(name, source_dx[sel], dy[sel], sizes[sel][:, None, None, None]))
    cov *= half_cut * visible[:, None, None, None]
    target = frames[members]
    target += cov[:, :, None] * (colors[:, None, :, None, None] - target)
    frames[members] = target


def _draw_fragments(
    frames: np.ndarray,
    scenes: list[Scene],
    draws: list[_Draws],
    shake: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    config: WorldConfig,
) -> None:
    """Small discs of an object's colour scattered around it, new positions every frame."""
    radius = FRAGMENT_RADIUS * config.side
    for i, scene in enumerate(scenes):
        for slot, obj in enumerate(scene.spec.objects):
            eff = scene.effects.for_object(slot)
            if eff.fragments <= 0:
                continue
            n = eff.fragments
            mid = np.array([scene.centers[slot][0] * config.width, scene.centers[slot][1] * config.height])
            center = mid + object_path(obj.motion, scene.spec.camera, config) + shake[i]  # (T, 2)
            reach = np.hypot(*object_extent(obj, eff, config))
            dist = reach + draws[i].fragment_distance[slot, :, :n]
            angle = (
                draws[i].fragment_angle[slot, :, :n] + 2 * np.pi * np.arange(n) / n
            )  # spread around the object
            fx = np.clip(center[:, 0, None] + dist * np.cos(angle), radius, config.width - radius)
            fy = np.clip(center[:, 1, None] + dist * np.sin(angle), radius, config.height - radius)
            ddx = xs[None, None, None, :] - fx[:, :, None, None].astype(np.float32)
            ddy = ys[None, None, :, None] - fy[:, :, None, None].astype(np.float32)
            cov = coverage(np.sqrt(ddx * ddx + ddy * ddy) - np.float32(radius)).max(axis=1)  # (T, H, W)
            color = np.array(OBJECT_COLORS[obj.color], dtype=np.float32)[None, :, None, None]
            frames[i] += cov[:, None] * (color - frames[i])
