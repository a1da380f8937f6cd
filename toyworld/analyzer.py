"""Measure any video of the toy world from its pixels and score it against a prompt.

The analyzer is the project's honest judge of generated videos: it never sees a scene description, only frames
(rendered, decoded from a lossy mp4, or produced by a model). It measures

- style: flicker (per-frame exposure changes, read from each frame's contrast against the median frame), noise
  (Immerkaer's robust Laplacian estimate) and blur (how steep luma edges are relative to their contrast);
- environment: the background colour and texture, by classifying denoised pixels against the world's palette;
- camera: the picture's shift between frames (matching background edge profiles), giving pan and shake;
- subject and dynamics: every object colour present, its mask at half coverage against the local background tone,
  connected components (main body, split halves, fragments), shape by template overlap, size class, and motion
  (a line fitted to the centroid path once the camera's shift is removed; the residual is jitter);

then compares the measurements with :func:`~toyworld.prompts.parse_prompt` of the prompt and assigns sub-scores
with exactly the rules the ground truth follows (:mod:`toyworld.defects`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from descore.answer import DIMENSIONS, SubScore, overall_from_subscores
from descore.errors import VideoError
from descore.video_io import Video, read_video, to_video
from toyworld.prompts import parse_prompt
from toyworld.render import coverage, gaussian_blur, shape_sdf
from toyworld.scene import (
    BACKGROUND_COLORS,
    OBJECT_COLORS,
    OBJECT_TRAVEL,
    PAN_TRAVEL,
    SHAPES,
    SIZES,
    SceneSpec,
)

logger = logging.getLogger(__name__)

# Thresholds. Geometry is in units of the shorter side S, speeds in units of the world's nominal speeds.
#: Gaussian smoothing (pixels) applied before segmenting a video whose noise reaches the minor level.
DENOISE_SIGMA = 1.0
#: Background match: a (denoised) pixel within this RGB distance of a background tone takes its label.
PALETTE_TOLERANCE = 0.25
#: Matting: a pixel is object when it is at least half object colour and this close to the object-background line.
MATTE_TOLERANCE = 0.22
#: Pixels this close (RGB distance) to a background tone are background without further test.
BACKGROUND_MARGIN = 0.06
#: Luma difference between an object colour and a background tone from which boundaries are drawn from luma.
LUMA_CONTRAST = 0.15
#: ... for pixels that show at least this share of the object's colour (blends of two background tones do not).
MIN_COLOR_SHARE = 0.3
#: An object colour counts as an object when its largest component covers this much of S^2 (median over frames).
MIN_OBJECT_AREA = 0.006
#: Smallest component (share of S^2) counted as a fragment: codec ringing makes specks smaller than that.
MIN_FRAGMENT_AREA = 0.0015
#: Views (frames) of an object compared with the shape templates, and the template sizes tried around the size
#: the body's area implies (a codec or blur eats into thin parts and corners).
SHAPE_VIEWS = 3
SIZE_FACTORS = (0.98, 1.04, 1.1)
BLURRED_SIZE_FACTORS = (1.0, 1.06, 1.12, 1.18)
#: Mean fragments per frame from which an object is "fragmenting".
FRAGMENTS_PER_FRAME = 0.5
#: A second component at least this share of the main one, in at least half of the frames, means a split object.
SPLIT_RATIO = 0.6
#: Object speed (share of the nominal speed) under which it is still; camera pan speed likewise.
STILL_SPEED = 0.4
STATIC_PAN_SPEED = 0.45
#: Jitter of an object and shake of the camera: RMS residual of the path around its line (S units).
JITTER_RESIDUAL = 0.015
SHAKE_RESIDUAL = 0.006
#: Flicker (exposure change of the third most changed frame), noise sigma and edge steepness: (minor, failure).
FLICKER_LEVELS = (0.045, 0.165)
NOISE_LEVELS = (0.015, 0.05)
SHARPNESS_LEVELS = (0.52, 0.315)
#: Frames (spread over the clip) on which blur is measured: blur is a property of the whole video.
SHARPNESS_FRAMES = 3
#: Luma contrast from which a neighbourhood holds an edge for the blur measurement.
EDGE_CONTRAST = 0.06
#: Background texture: share of shade-tone pixels above which the background is textured, and the share of
#: background pixels whose tone differs a band height further down above which it is checkered, not striped.
TEXTURE_SHARE = 0.12
CHECKER_MISMATCH = 0.15

_OBJECT_NAMES = list(OBJECT_COLORS)
_BG_NAMES = list(BACKGROUND_COLORS)
_OBJECT_PALETTE = np.array([OBJECT_COLORS[c] for c in _OBJECT_NAMES], dtype=np.float32)
#: Background tones in label order: base and shade of each background colour.
_TONES = np.array([tone for c in _BG_NAMES for tone in BACKGROUND_COLORS[c]], dtype=np.float32)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class DetectedObject:
    """One object found in a video: its colour and what was measured of it.

    ``velocity`` is the world-frame motion (camera removed) in units of the nominal object speed (x right, y down);
    ``jitter`` the RMS residual around the fitted line in S units; ``fragments`` the mean number of fragments per
    frame. ``shape`` and ``size`` are None when they could not be measured (a split object, no clean view).
    ``positions`` is the track in the image: per frame, the body's centroid (x, y) as fractions of the frame's width
    and height (camera motion included, as a viewer sees it), NaN where the object is not visible.
    """

    color: str
    shape: str | None
    size: str | None
    motion: str
    velocity: tuple[float, float]
    jitter: float
    split: bool
    fragments: float
    visible_frames: int
    positions: tuple[tuple[float, float], ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Analysis:
    """What the analyzer measured in a video and the judge sub-scores it gives against the prompt."""

    subscores: dict[str, SubScore]
    overall: float
    objects: tuple[DetectedObject, ...]
    background: str
    texture: str
    camera: str
    shake: float
    flicker: float
    noise: float
    sharpness: float | None
    findings: tuple[str, ...] = field(default_factory=tuple)


# ----------------------------------------------------------------------------------------------------------------
# Pixel helpers


def _dots(rows: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """(N, 3) x (K, 3) -> (N, K) dot products, written out: a BLAS call for a 3-long inner dimension spends more
    time starting its threads than computing (and fights other processes for the cores)."""
    return rows[:, 0:1] * vectors[:, 0] + rows[:, 1:2] * vectors[:, 1] + rows[:, 2:3] * vectors[:, 2]


def _luma(frames: np.ndarray) -> np.ndarray:
    """Luma (T, H, W) of (T, 3, H, W) frames, BT.601 weights as in H.264's colour conversion."""
    return _LUMA[0] * frames[:, 0] + _LUMA[1] * frames[:, 1] + _LUMA[2] * frames[:, 2]


def _filter_extreme(frames: np.ndarray, radius: int, op: Any) -> np.ndarray:
    """Max or min filter (``op`` np.maximum / np.minimum) over a (2r+1)^2 window of (..., H, W), edge padding."""
    out = frames
    for axis in (-1, -2):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        window = [slice(None)] * out.ndim
        window[axis] = slice(0, n)
        acc = padded[tuple(window)].copy()
        for k in range(1, 2 * radius + 1):
            window[axis] = slice(k, k + n)
            op(acc, padded[tuple(window)], out=acc)
        out = acc
    return out


def _components(masks: np.ndarray) -> np.ndarray:
    """Connected-component labels (8-connectivity) of boolean masks (N, H, W); 0 is background.

    Labels are computed inside the masks' bounding box: each component gets its smallest flat pixel index + 1 there;
    neighbours take the smallest label around them and labels follow their own pointers (pointer jumping), which
    converges in a few sweeps for compact blobs.
    """
    full = np.zeros(masks.shape, dtype=np.int64)
    rows, cols = np.nonzero(masks.any(axis=(0, 2)))[0], np.nonzero(masks.any(axis=(0, 1)))[0]
    if len(rows) == 0:
        return full
    box = (slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    masks = masks[box]
    n, h, w = masks.shape
    sentinel = n * h * w
    labels = np.where(masks.ravel(), np.arange(sentinel), sentinel).reshape(n, h, w)
    while True:
        padded = np.pad(labels, ((0, 0), (1, 1), (1, 1)), constant_values=sentinel)
        best = labels.copy()
        for dy in range(3):
            for dx in range(3):
                np.minimum(best, padded[:, dy : dy + h, dx : dx + w], out=best)
        best[~masks] = sentinel
        table = np.append(best.ravel(), sentinel)
        for _ in range(3):
            table = table[table]
        jumped = table[:-1].reshape(n, h, w)
        if np.array_equal(jumped, labels):
            break
        labels = jumped
    full[box] = np.where(masks, labels + 1, 0)
    return full


def _linear_fit(t: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slope per column of ``values`` (n, k) against ``t`` (n,), and the residuals."""
    tc = t - t.mean()
    denom = float((tc * tc).sum()) or 1.0
    slope = (tc[:, None] * (values - values.mean(axis=0))).sum(axis=0) / denom
    residual = values - values.mean(axis=0) - tc[:, None] * slope
    return slope, residual


# ----------------------------------------------------------------------------------------------------------------
# Measurements


def _as_frames(video: Any) -> np.ndarray:
    """Frames as float32 (T, 3, H, W) numpy in [0, 1] from a path, a Video, a tensor or an array."""
    source = str(video) if isinstance(video, (str, os.PathLike)) else "video to analyze"
    if isinstance(video, (str, os.PathLike)):
        video = read_video(video)
    if isinstance(video, Video):
        video = video.frames
    if isinstance(video, torch.Tensor) and video.is_floating_point():
        video = video.detach().to(device="cpu", dtype=torch.float32).numpy()
    fast = (
        isinstance(video, np.ndarray)
        and video.dtype == np.float32
        and video.ndim == 4
        and video.shape[1] == 3
    )
    if fast and np.isfinite(video).all() and video.min() >= 0.0 and video.max() <= 1.0:
        frames = (
            video  # (T, 3, H, W) floats in range, as the renderer and read_video give: nothing to convert
        )
    else:
        frames = to_video(video, name=source).frames.numpy()
    if frames.shape[0] < 2 or min(frames.shape[2:]) < 16:
        raise VideoError(
            f"{source}: the analyzer needs at least 2 frames of at least 16x16, got {tuple(frames.shape)}"
        )
    return np.ascontiguousarray(frames)


def _flicker(frames: np.ndarray) -> tuple[float, np.ndarray]:
    """Flicker strength and the frames with each frame's exposure change undone.

    A frame brightened or darkened by ``m`` keeps its layout but loses ``m`` of its contrast (x -> (1 - m) x + c),
    so each frame's gain against the median frame is its contrast ratio, and its offset follows from the means.
    Strength is the third-largest gain deviation (a flicker touches several frames; one odd frame is not flicker).
    """
    means = frames.mean(axis=(1, 2, 3))
    stds = frames.std(axis=(1, 2, 3))
    reference = float(np.median(stds))
    if reference < 0.01:
        # No contrast to compare (an empty plain frame): the share of the brightness range each frame moved.
        gains = np.ones_like(stds)
        middle = float(np.median(means))
        deviation = np.where(
            means > middle, (means - middle) / max(1e-6, 1 - middle), (middle - means) / max(1e-6, middle)
        )
    else:
        gains = stds / reference
        deviation = np.abs(1.0 - gains)
    strength = float(np.sort(deviation)[-min(3, len(deviation))])
    if strength < FLICKER_LEVELS[0] / 2:
        return strength, frames
    offsets = means - gains * np.median(means)
    corrected = (frames - offsets[:, None, None, None]) / gains[:, None, None, None]
    return strength, np.clip(corrected, 0.0, 1.0)


def _noise(frames: np.ndarray) -> float:
    """Noise sigma by Immerkaer's Laplacian-difference estimator, made robust to edges with a median."""
    luma = _luma(frames)
    conv = (
        luma[:, :-2, :-2]
        - 2 * luma[:, :-2, 1:-1]
        + luma[:, :-2, 2:]
        - 2 * luma[:, 1:-1, :-2]
        + 4 * luma[:, 1:-1, 1:-1]
        - 2 * luma[:, 1:-1, 2:]
        + luma[:, 2:, :-2]
        - 2 * luma[:, 2:, 1:-1]
        + luma[:, 2:, 2:]
    )
    return float(np.median(np.abs(conv)) / (0.6745 * 6.0))


def _sharpness(frames: np.ndarray, side: int, noise: float) -> float | None:
    """Median steepness of luma edges: the largest one-pixel step near a pixel over the local contrast (1 = crisp).

    Luma only: chroma is stored at half resolution in 4:2:0 video, so colour edges look soft even when sharp.
    Measured before denoising: a median filter steepens soft edges that carry codec ripples. Edges must stand
    well above the noise; None when the video has too few of them to tell (say, a gray object on gray).
    """
    radius = max(2, round(0.08 * side))
    picks = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), SHARPNESS_FRAMES)).round().astype(int))
    luma = _luma(frames[picks])
    step = np.zeros_like(luma)
    step[:, :, :-1] = np.abs(np.diff(luma, axis=-1))
    step[:, :-1, :] = np.maximum(step[:, :-1, :], np.abs(np.diff(luma, axis=-2)))
    steepest = _filter_extreme(step, radius, np.maximum)
    contrast = _filter_extreme(luma, radius, np.maximum) - _filter_extreme(luma, radius, np.minimum)
    edges = contrast > max(EDGE_CONTRAST, 4.0 * noise)
    if edges.sum() < 0.01 * edges.size:
        return None
    return float(np.median(steepest[edges] / contrast[edges]))


def grade(value: float, levels: tuple[float, float], higher_is_worse: bool = True) -> int:
    """2, 1 or 0 by which side of the (minor, failure) thresholds a measurement falls."""
    if higher_is_worse:
        return 2 if value < levels[0] else 1 if value < levels[1] else 0
    return 2 if value > levels[0] else 1 if value > levels[1] else 0


def _tone_labels(frames: np.ndarray) -> np.ndarray:
    """Index (T, H, W) into the background tones of the nearest tone within ``PALETTE_TOLERANCE``, else -1."""
    t, _, h, w = frames.shape
    pixels = np.moveaxis(frames, 1, -1).reshape(-1, 3)
    squared = (
        (pixels * pixels).sum(axis=1, keepdims=True)
        - 2 * _dots(pixels, _TONES)
        + (_TONES * _TONES).sum(axis=1)
    )
    labels = np.argmin(squared, axis=1)
    labels[np.take_along_axis(squared, labels[:, None], axis=1)[:, 0] > PALETTE_TOLERANCE**2] = -1
    return labels.reshape(t, h, w)


def _background(labels: np.ndarray) -> tuple[str, str, np.ndarray]:
    """Background colour, texture and the tone map (0 base, 1 shade, -1 other) from tone labels (T, H, W)."""
    counts = np.bincount(labels[labels >= 0], minlength=len(_TONES)).reshape(-1, 2)
    index = int(np.argmax(counts.sum(axis=1)))
    tone = np.full(labels.shape, -1, dtype=np.int8)
    tone[labels == 2 * index] = 0
    tone[labels == 2 * index + 1] = 1
    total = max(1, int(counts[index].sum()))
    texture = "plain"
    if counts[index, 1] / total > TEXTURE_SHARE and counts[index, 0] / total > TEXTURE_SHARE:
        # Vertical bands look the same a few rows further down; a checker swaps its tones between row bands.
        side = min(labels.shape[1:])
        mismatch = []
        for fraction in (0.08, 0.13, 0.18):
            d = max(1, round(fraction * side))
            both = (tone[:, d:, :] >= 0) & (tone[:, :-d, :] >= 0)
            mismatch.append(((tone[:, d:, :] != tone[:, :-d, :]) & both).sum() / max(1, both.sum()))
        texture = "checkered" if np.mean(mismatch) > CHECKER_MISMATCH else "striped"
    return _BG_NAMES[index], texture, tone


def _profile_shifts(profiles: np.ndarray, reach: int) -> np.ndarray:
    """Displacement d_k (pixels, sub-pixel) that best maps profile k onto k + 1 (after(x) ~ before(x - d)), (T-1,)."""
    before, after = profiles[:-1], profiles[1:]
    n = profiles.shape[1]
    padded = np.pad(before, ((0, 0), (reach, reach)), constant_values=np.nan)
    # windows[:, j] is ``before`` moved right by reach - j pixels.
    windows = np.lib.stride_tricks.sliding_window_view(padded, n, axis=1)[:, ::-1]
    gaps = np.abs(after[:, None, :] - windows)
    valid = np.isfinite(gaps)
    cost = np.where(valid, gaps, 0.0).sum(axis=2) / np.maximum(valid.sum(axis=2), 1)
    cost[valid.sum(axis=2) < n // 2] = np.inf
    best = np.argmin(cost, axis=1)
    return np.array(
        [
            k - reach + (_parabola(row[k - 1 : k + 2]) if 0 < k < len(row) - 1 else 0.0)
            for k, row in zip(best, cost)
        ]
    )


def _edge_profile(luma: np.ndarray, valid: np.ndarray, axis: int) -> np.ndarray:
    """Mean edge strength across ``axis`` of background pixels: (T, L) profiles along the other axis, smoothed."""
    grad = np.abs(np.diff(luma, axis=axis))
    both = valid[:, 1:, :] & valid[:, :-1, :] if axis == 1 else valid[:, :, 1:] & valid[:, :, :-1]
    across = 1 if axis == 2 else 2
    profile = (grad * both).sum(axis=across) / np.maximum(both.sum(axis=across), 1)
    padded = np.pad(profile, ((0, 0), (1, 1)), mode="edge")
    return 0.25 * padded[:, :-2] + 0.5 * padded[:, 1:-1] + 0.25 * padded[:, 2:]


def _camera_shifts(luma: np.ndarray, valid: np.ndarray, vertical: bool, side: int) -> np.ndarray:
    """Content displacement (T, 2) of every frame relative to the first, from background edge profiles.

    Vertical bands (both textures) give the horizontal shift; horizontal bands (checkered only) the vertical one.
    """
    t = luma.shape[0]
    reach = int(np.ceil(0.12 * side))
    shifts = np.zeros((t, 2))
    axes = [(0, 2)] + ([(1, 1)] if vertical else [])
    for coord, axis in axes:
        shifts[1:, coord] = np.cumsum(_profile_shifts(_edge_profile(luma, valid, axis), reach))
    return shifts


def _parabola(values: np.ndarray | None) -> float:
    """Sub-sample offset of the minimum of three cost samples."""
    if values is None or not np.all(np.isfinite(values)):
        return 0.0
    denom = values[0] - 2 * values[1] + values[2]
    return float(0.5 * (values[0] - values[2]) / denom) if denom > 1e-9 else 0.0


def _matte(frames: np.ndarray, colors: np.ndarray, tones: np.ndarray) -> np.ndarray:
    """Object colour index (T, H, W) of every pixel that is at least half one of ``colors`` over a background tone
    (-1 elsewhere).

    A pixel goes to the colour whose mixing line with a tone passes closest to it. Chroma has half the resolution of
    luma in 4:2:0 video, so the colour decision blurs boundaries by a pixel; where the object and the tone differ
    enough in luma, the boundary is redrawn near the colour mask from luma: object where the luma is at least half
    way from the tone's to the object's.
    """
    t, _, h, w = frames.shape
    pixels = np.ascontiguousarray(np.moveaxis(frames, 1, -1).reshape(-1, 3), dtype=np.float32)
    colors, tones = colors.astype(np.float32), tones.astype(np.float32)
    owner = np.full(len(pixels), -1, dtype=np.int64)
    # Pixels right on a background tone are background; only the others are compared with the mixing lines.
    gap = np.min([((pixels - tone) ** 2).sum(axis=1) for tone in tones], axis=0)
    index = np.nonzero(gap > BACKGROUND_MARGIN**2)[0]
    candidates = pixels[index]
    best = np.full(len(index), np.inf, dtype=np.float32)
    found = np.full(len(index), -1, dtype=np.int64)
    nearest = np.zeros(len(index), dtype=np.int64)
    share = np.zeros(len(index), dtype=np.float32)
    tone_of = np.zeros(len(index), dtype=np.int64)
    for j, tone in enumerate(tones):
        rel = candidates - tone
        axes = colors - tone
        norms = (axes * axes).sum(axis=1)
        dots = _dots(rel, axes)
        alpha = np.clip(dots / norms, 0.0, 1.0)
        residual = (rel * rel).sum(axis=1, keepdims=True) - alpha * (2 * dots - alpha * norms)
        k = np.argmin(residual, axis=1)[:, None]
        closest = np.take_along_axis(residual, k, axis=1)[:, 0]
        chosen = np.take_along_axis(alpha, k, axis=1)[:, 0]
        k = k[:, 0]
        better = closest < best
        best = np.where(better, closest, best)
        found = np.where(better, np.where(chosen >= 0.5, k, -1), found)
        nearest = np.where(better, k, nearest)
        share = np.where(better, chosen, share)
        tone_of = np.where(better, j, tone_of)
    found[best >= MATTE_TOLERANCE**2] = -1
    owner[index] = found
    # Luma refinement, per object colour with a sizeable mask, next to that mask.
    luma = _dots(candidates, _LUMA[None])[:, 0]
    tone_luma = _dots(tones, _LUMA[None])[:, 0][tone_of]
    counts = np.bincount(found[found >= 0], minlength=len(colors))
    for k in np.nonzero(counts >= MIN_OBJECT_AREA * min(h, w) ** 2)[0]:
        mask = (owner == k).reshape(t, h, w).astype(np.float32)
        near = (_filter_extreme(mask, 2, np.maximum).ravel() > 0)[index]
        contrast = float((colors[k] * _LUMA).sum()) - tone_luma
        usable = near & (nearest == k) & (share >= MIN_COLOR_SHARE) & (np.abs(contrast) >= LUMA_CONTRAST)
        alpha = (luma[usable] - tone_luma[usable]) / contrast[usable]
        owner[index[usable]] = np.where(alpha >= 0.5, k, -1)
    return owner.reshape(t, h, w)


@dataclass
class _Track:
    color: str
    positions: np.ndarray  # (T, 2) NaN where not visible
    areas: np.ndarray  # (T,)
    split: bool
    fragments: float
    shape: str | None
    size: str | None


def _track(color: str, mask: np.ndarray, others: np.ndarray, side: int, blur: float) -> _Track | None:
    """Follow one object colour through the frames: main body, split halves, fragments, shape and size.

    Components are ranked by area in every frame. The object counts as split when a second component of comparable
    area shows in at least half of its frames; its body is then both halves, otherwise the largest component.
    Smaller components are fragments, unless they touch ``others`` (the masks of the other objects), where they
    are colour fringes of another object's edge.
    """
    t, h, w = mask.shape
    labels = _components(mask)
    min_body = MIN_OBJECT_AREA * side * side / 2
    min_fragment = max(2.0, MIN_FRAGMENT_AREA * side * side)
    ranked: list[tuple[np.ndarray, np.ndarray] | None] = []
    for k in range(t):
        ids, counts = np.unique(labels[k][labels[k] > 0], return_counts=True)
        order = np.argsort(-counts, kind="stable")
        ranked.append((ids[order], counts[order]) if len(ids) and counts[order][0] >= min_body else None)
    visible = sum(r is not None for r in ranked)
    if visible == 0:
        return None
    split_frames = sum(
        1 for r in ranked if r is not None and len(r[1]) > 1 and r[1][1] >= SPLIT_RATIO * r[1][0]
    )
    split = split_frames >= visible / 2
    positions = np.full((t, 2), np.nan)
    areas = np.zeros(t)
    fragment_total = 0
    views: list[tuple[bool, float, np.ndarray]] = []
    ys, xs = np.mgrid[0:h, 0:w]
    for k, entry in enumerate(ranked):
        if entry is None:
            continue
        ids, counts = entry
        parts = 2 if split and len(ids) > 1 else 1
        body = np.isin(labels[k], ids[:parts])
        fringe = np.unique(labels[k][others[k]])
        fragment_total += int(np.sum((counts[parts:] >= min_fragment) & ~np.isin(ids[parts:], fringe)))
        areas[k] = body.sum()
        by, bx = ys[body], xs[body]
        positions[k] = (bx.mean() + 0.5, by.mean() + 0.5)
        inside = bx.min() > 0 and by.min() > 0 and bx.max() < w - 1 and by.max() < h - 1
        views.append((inside, float(areas[k]), body))
    if np.median(areas[areas > 0]) < MIN_OBJECT_AREA * side * side:
        return None
    shape = size = None
    if not split:
        # The clearest views: whole (not cut by the frame edge) and largest (not hidden behind another object).
        views.sort(key=lambda v: (v[0], v[1]), reverse=True)
        shape, size = _classify_shape([v[2] for v in views[:SHAPE_VIEWS]], side, blur)
    return _Track(color, positions, areas, split, fragment_total / visible, shape, size)


#: Area of each shape in units of its size squared, and its centroid's offset below the box centre (size units).
_SHAPE_AREA = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5, "bar": 0.4, "cross": 5.0 / 9.0}
_SHAPE_CENTROID_DROP = {"square": 0.0, "circle": 0.0, "triangle": 1.0 / 6.0, "bar": 0.0, "cross": 0.0}


def _blur_sigma(sharpness: float | None) -> float:
    """Blur sigma in pixels implied by the edge steepness (calibrated on rendered, blurred edges)."""
    if sharpness is None or sharpness >= SHARPNESS_LEVELS[0]:
        return 0.0
    return max(0.0, 1.0 / sharpness - 1.65)


def _classify_shape(bodies: Sequence[np.ndarray], side: int, blur: float = 0.0) -> tuple[str, str]:
    """Shape and size class of an object from a few views of its body (boolean masks of single frames).

    For every shape, templates are drawn at a few sizes around the one the body's area implies, centred on the
    body's centroid, softened by the video's own blur (blurred corners compare with blurred corners) and cut at half
    coverage. The shape whose best template overlaps the views most (mean intersection over union) wins, and its
    best size gives the size class.
    """
    factors = BLURRED_SIZE_FACTORS if blur > 0.3 else SIZE_FACTORS
    totals = {shape: np.zeros(len(factors)) for shape in SHAPES}
    sizes = {shape: np.zeros(len(factors)) for shape in SHAPES}
    for body in bodies:
        ys, xs = np.nonzero(body)
        margin = int(np.ceil(0.1 * side + 3 * blur)) + 2
        y0, x0 = max(0, ys.min() - margin), max(0, xs.min() - margin)
        crop = body[y0 : ys.max() + margin + 1, x0 : xs.max() + margin + 1]
        cx, cy = xs.mean() + 0.5 - x0, ys.mean() + 0.5 - y0
        h, w = crop.shape
        gx = np.arange(w, dtype=np.float32)[None, None, :] + 0.5 - cx
        gy = np.arange(h, dtype=np.float32)[None, :, None] + 0.5 - cy
        for shape in SHAPES:
            size = (np.sqrt(len(xs) / _SHAPE_AREA[shape]) * np.asarray(factors, dtype=np.float32))[
                :, None, None
            ]
            template = coverage(shape_sdf(shape, gx, gy + _SHAPE_CENTROID_DROP[shape] * size, size))
            if blur > 0.3:
                template = gaussian_blur(template, blur)
            template = template >= 0.5
            overlap = (template & crop).sum(axis=(1, 2)) / np.maximum(1, (template | crop).sum(axis=(1, 2)))
            totals[shape] += overlap
            sizes[shape] += size[:, 0, 0] / len(bodies)
    shape = max(SHAPES, key=lambda s: totals[s].max())
    size = sizes[shape][int(np.argmax(totals[shape]))]
    return shape, min(SIZES, key=lambda s: abs(SIZES[s] * side - size))


def _direction(velocity: np.ndarray) -> str:
    if np.hypot(*velocity) < STILL_SPEED:
        return "still"
    vx, vy = velocity
    if abs(vx) >= abs(vy):
        return "right" if vx > 0 else "left"
    return "down" if vy > 0 else "up"


# ----------------------------------------------------------------------------------------------------------------
# The analyzer


def measure(video: Any) -> tuple[dict[str, Any], tuple[DetectedObject, ...]]:
    """Everything the analyzer reads from the pixels of a video, with no prompt involved."""
    frames = _as_frames(video)
    t, _, h, w = frames.shape
    side = min(h, w)
    object_speed = OBJECT_TRAVEL * side / (t - 1)
    noise = _noise(frames)
    flicker, steady = _flicker(frames)
    # Smooth only noisy videos: any filter changes small shapes, and clean frames need none.
    denoise = DENOISE_SIGMA if noise >= NOISE_LEVELS[0] else 0.0
    denoised = gaussian_blur(steady, denoise) if denoise else steady
    sharpness = _sharpness(steady, side, noise)
    background, texture, tone = _background(_tone_labels(denoised))
    shifts = np.zeros((t, 2))
    if texture != "plain":
        luma = _luma(denoised)
        shifts = _camera_shifts(luma, tone >= 0, texture == "checkered", side)
    steps = np.arange(t, dtype=float)
    pan_slope, pan_residual = _linear_fit(steps, shifts)
    pan_velocity = pan_slope[0] / (PAN_TRAVEL * side / (t - 1))
    camera = "static"
    if abs(pan_velocity) >= STATIC_PAN_SPEED:
        camera = "pan_left" if pan_velocity > 0 else "pan_right"
    shake = float(np.sqrt(np.mean(np.sum(pan_residual**2, axis=1)))) / side
    tones = np.array(BACKGROUND_COLORS[background], dtype=np.float32)
    owner = _matte(denoised, _OBJECT_PALETTE, tones)
    objects = []
    for index, name in enumerate(_OBJECT_NAMES):
        mask = owner == index
        if np.median(mask.sum(axis=(1, 2))) < MIN_OBJECT_AREA * side * side:
            continue
        others = _filter_extreme(((owner >= 0) & ~mask).astype(np.float32), 1, np.maximum) > 0
        track = _track(name, mask, others, side, float(np.hypot(_blur_sigma(sharpness), denoise)))
        if track is None:
            continue
        seen = np.isfinite(track.positions[:, 0])
        world = track.positions[seen] - shifts[seen]
        velocity = np.zeros(2)
        jitter = 0.0
        if seen.sum() >= 2:
            slope, residual = _linear_fit(steps[seen], world)
            velocity = slope / object_speed
            jitter = float(np.sqrt(np.mean(np.sum(residual**2, axis=1)))) / side
        objects.append(
            DetectedObject(
                color=name,
                shape=track.shape,
                size=track.size,
                motion=_direction(velocity),
                velocity=(float(velocity[0]), float(velocity[1])),
                jitter=jitter,
                split=bool(track.split),
                fragments=track.fragments,
                visible_frames=int(seen.sum()),
                positions=tuple((float(x) / w, float(y) / h) for x, y in track.positions),
            )
        )
    measurements = {
        "background": background,
        "texture": texture,
        "camera": camera,
        "shake": shake,
        "flicker": flicker,
        "noise": noise,
        "sharpness": sharpness,
    }
    return measurements, tuple(objects)


def match_objects(spec: SceneSpec, objects: Sequence[DetectedObject]) -> list[DetectedObject | None]:
    """Pair every asked object with a detected one: same colour first, then any detected object left over."""
    matched: list[DetectedObject | None] = [None] * len(spec.objects)
    free = list(objects)
    for i, obj in enumerate(spec.objects):
        for det in free:
            if det.color == obj.color:
                matched[i] = det
                free.remove(det)
                break
    for i, obj in enumerate(spec.objects):
        if matched[i] is None and free:
            det = max(free, key=lambda d: (d.shape == obj.shape) + (d.motion == obj.motion))
            matched[i] = det
            free.remove(det)
    return matched


def score(
    spec: SceneSpec, measurements: dict[str, Any], objects: Sequence[DetectedObject]
) -> tuple[dict[str, SubScore], list[str]]:
    """Sub-scores of measured content against what a prompt asks, with one finding per lowered score."""
    findings: list[str] = []
    scores: dict[str, SubScore] = {d: 2 for d in DIMENSIONS}

    def lower(dimension: str, value: int, finding: str) -> None:
        scores[dimension] = min(scores[dimension], value)
        findings.append(f"{dimension}: {finding}")

    matched = match_objects(spec, objects)
    for obj, det in zip(spec.objects, matched):
        name = f"the {obj.color} {obj.shape}"
        if det is None:
            lower("subject", 0, f"{name} is missing")
            continue
        if det.color != obj.color:
            lower("subject", 0, f"{name} is {det.color}")
        if det.split:
            lower("subject", 0, f"{name} is split in two")
        elif det.shape is not None and det.shape != obj.shape:
            lower("subject", 0, f"{name} is a {det.shape}")
        if not det.split and obj.size is not None and det.size is not None and det.size != obj.size:
            lower("subject", 1, f"{name} is {det.size} instead of {obj.size}")
        if det.fragments >= FRAGMENTS_PER_FRAME:
            lower("subject", 1, f"{name} sheds fragments")
        if det.motion != obj.motion:
            lower("dynamics", 0, f"{name} is {'still' if det.motion == 'still' else 'moving ' + det.motion}")
        if det.jitter >= JITTER_RESIDUAL:
            lower("dynamics", 1, f"{name} jitters")
    extra = [d for d in objects if d not in matched]
    for det in extra:
        lower("subject", 1, f"an unrequested {det.color} object")
    if all(det is None for det in matched):
        lower("dynamics", 0, "nothing moves as asked")
    if spec.camera is None:
        scores["camera"] = None
    else:
        if measurements["camera"] != spec.camera:
            lower("camera", 0, f"the camera is {measurements['camera']} instead of {spec.camera}")
        if measurements["shake"] >= SHAKE_RESIDUAL:
            lower("camera", 1, "the camera shakes")
    if measurements["background"] != spec.background:
        lower("environment", 0, f"the background is {measurements['background']}")
    elif measurements["texture"] != spec.texture:
        lower("environment", 1, f"the background is {measurements['texture']} instead of {spec.texture}")
    for name, level in style_grades(measurements).items():
        if level is not None and level < 2:
            lower("style", level, f"{'strong' if level == 0 else 'mild'} {name}")
    return scores, findings


def style_grades(measurements: dict[str, Any]) -> dict[str, int | None]:
    """The grade (2 none, 1 minor, 0 strong) of each style fault in measurements of :func:`measure`: flicker, noise
    and blur; None where it could not be measured."""
    return {
        name: None if value is None else grade(value, levels, worse)
        for name, value, levels, worse in (
            ("flicker", measurements["flicker"], FLICKER_LEVELS, True),
            ("noise", measurements["noise"], NOISE_LEVELS, True),
            ("blur", measurements["sharpness"], SHARPNESS_LEVELS, False),
        )
    }


def analyze(video: Any, prompt: str | SceneSpec) -> Analysis:
    """Measure a video (path, :class:`~descore.video_io.Video`, tensor or array, (T, C, H, W) or (T, H, W, C))
    and score it against a prompt (text or an already parsed :class:`~toyworld.scene.SceneSpec`)."""
    spec = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    measurements, objects = measure(video)
    scores, findings = score(spec, measurements, objects)
    return Analysis(
        subscores=scores,
        overall=overall_from_subscores(scores),
        objects=objects,
        findings=tuple(findings),
        **measurements,
    )


__all__ = ["Analysis", "DetectedObject", "analyze", "match_objects", "measure", "score", "style_grades"]
