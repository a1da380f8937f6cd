"""Video I/O: read files, folders of frames and in-memory frames into one layout, sample frames, write mp4/webm/gif.

Every reader returns a :class:`Video`: float32 frames in [0, 1] laid out (T, C, H, W) with C = 3, the timestamp of
each frame in the source, and what is known of the source (frame rate, duration, indices of the kept frames).

Frame selection follows one rule everywhere (:func:`sample_frame_indices`), the rule of the Qwen3-VL video processor
in transformers, so a DeScore model sees the frames its backbone would pick. Files are decoded with PyAV: the
packets are scanned first (no decoding) to learn every frame's presentation timestamp and the keyframes, then the
decoder seeks to the keyframe before each wanted frame when that skips work (sparse sampling) and decodes straight
through otherwise. Frames are identified by their PTS, never by counting decoded frames, and only kept frames are
converted to RGB. Formats PyAV cannot open or decode (animated WebP, multi-page TIFF ...) go through imageio.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from descore.errors import ConfigError, VideoError, check_positive

# PyAV is imported by the functions that read or write files: scoring in-memory frames needs no FFmpeg.
if TYPE_CHECKING:
    import av

logger = logging.getLogger(__name__)

#: Sampling defaults of the Qwen3-VL video processor (transformers ``Qwen3VLVideoProcessor``).
QWEN3_VL_FPS = 2.0
QWEN3_VL_MIN_FRAMES = 4
QWEN3_VL_MAX_FRAMES = 768

#: Files a folder-of-frames video is made of (sorted by name, numbers compared as numbers).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

#: Float frames may stray this far outside [0, 1] (rounding in a VAE decode, say); they are clamped.
RANGE_TOLERANCE = 1e-2

#: Seconds between keyframes in written H.264/VP9 files (4 frames at 24 fps). A short GOP keeps exact seeking cheap:
#: reaching a frame decodes one keyframe plus on average half a GOP, so sampling 2 fps from 24 fps decodes about a
#: fifth of the frames. The price is a larger file: 20 % (textured) to 50 % (smooth content) over a 1 s GOP. Pass
#: ``keyframe_interval`` to :func:`write_video` for archival files that are rarely sampled.
KEYFRAME_SECONDS = 1 / 6

#: Codecs whose keyframes can be decoded on their own, so seeking to a keyframe is exact. GIF and animated-image
#: codecs draw each frame over the previous one and are always decoded from the start.
_SEEKABLE_CODECS = frozenset(
    {
        "h264",
        "hevc",
        "av1",
        "vp8",
        "vp9",
        "mpeg4",
        "mpeg2video",
        "mpeg1video",
        "mjpeg",
        "prores",
        "dnxhd",
        "theora",
        "h263",
        "ffv1",
        "png",
        "rawvideo",
    }
)

# Cost model for choosing between seeking and decoding straight through, in units of one inter-frame decode.
_KEYFRAME_COST = 2.5
_SEEK_OVERHEAD = 1.0

_SIZE_TAG = re.compile(r"descore:size=(\d+)x(\d+)")
_PROGRESS_MIN_FRAMES = 1000

Strategy = Literal["auto", "seek", "sequential"]
FrameInput = Union[torch.Tensor, np.ndarray, Sequence[Any], "Video"]


@dataclass(eq=False)
class Video:
    """Frames plus what is known of their source.

    ``frames`` is (T, C, H, W) float32 in [0, 1] with C = 3 (it keeps the autograd graph of in-memory float input);
    ``timestamps`` (T,) float64 holds each frame's time in seconds from the source's first frame (NaN when the
    source has no known rate); ``frame_indices`` are the frames' indices in the source.
    """

    frames: torch.Tensor
    timestamps: torch.Tensor
    source_fps: float | None = None
    duration: float | None = None
    frame_indices: torch.Tensor | None = None
    source: str = "<video>"

    def __post_init__(self) -> None:
        if self.frames.ndim != 4 or self.frames.shape[1] != 3 or not self.frames.is_floating_point():
            raise VideoError(
                f"{self.source}: Video.frames must be a float (T, 3, H, W) tensor, got "
                f"{self.frames.dtype} {tuple(self.frames.shape)}"
            )
        count = self.frames.shape[0]
        if tuple(self.timestamps.shape) != (count,):
            raise VideoError(
                f"{self.source}: {count} frames but timestamps of shape {tuple(self.timestamps.shape)}"
            )
        if self.frame_indices is not None and tuple(self.frame_indices.shape) != (count,):
            raise VideoError(
                f"{self.source}: {count} frames but frame_indices of shape {tuple(self.frame_indices.shape)}"
            )

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[2])

    @property
    def width(self) -> int:
        return int(self.frames.shape[3])

    @property
    def sampled_fps(self) -> float | None:
        """Effective rate of the kept frames, (T - 1) / (last timestamp - first); None if it cannot be known."""
        if self.num_frames < 2:
            return None
        span = float(self.timestamps[-1] - self.timestamps[0])
        if not math.isfinite(span) or span <= 0:
            return None
        return (self.num_frames - 1) / span


# ----------------------------------------------------------------------------------------------------------------
# The frame-index rule


def _check_positive(name: str, value: float | None) -> None:
    if value is not None:
        check_positive(name, value)


def _check_count(name: str, value: int | None) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1
    ):
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _check_sampling(
    fps: float | None, num_frames: int | None, min_frames: int | None, max_frames: int | None
) -> None:
    if fps is not None and num_frames is not None:
        raise ConfigError(f"give fps or num_frames, not both (got fps={fps!r}, num_frames={num_frames!r})")
    _check_positive("fps", fps)
    _check_count("num_frames", num_frames)
    _check_count("min_frames", min_frames)
    _check_count("max_frames", max_frames)
    if min_frames is not None and max_frames is not None and min_frames > max_frames:
        raise ConfigError(f"min_frames={min_frames} is larger than max_frames={max_frames}")


def sample_frame_indices(
    total_frames: int,
    source_fps: float | None,
    *,
    fps: float | None = None,
    num_frames: int | None = None,
    min_frames: int | None = None,
    max_frames: int | None = None,
) -> list[int]:
    """Indices of the frames to keep from a video of ``total_frames`` frames: the Qwen3-VL processor's rule.

    The count ``n`` is chosen, then ``n`` indices are spread evenly from the first to the last frame, both included:
    ``numpy.linspace(0, total_frames - 1, n).round()`` (numpy rounds halves to even).

    - ``fps`` given: ``n = int(total_frames / source_fps * fps)``, then ``n = min(max(n, min_frames), max_frames,
      total_frames)``; so a clip never yields more frames than it has. Needs ``source_fps``.
    - ``num_frames`` given: ``n = num_frames`` (then raised to ``min_frames`` / cut to ``max_frames`` if those are
      given; Qwen3-VL ignores them here). A count above ``total_frames`` repeats frames, as Qwen3-VL does.
    - neither: ``n = min(max(total_frames, min_frames), max_frames)``: every frame, thinned to ``max_frames``.

    ``min_frames`` None means 1 and ``max_frames`` None means no cap. With ``fps=QWEN3_VL_FPS``,
    ``min_frames=QWEN3_VL_MIN_FRAMES``, ``max_frames=QWEN3_VL_MAX_FRAMES`` this returns exactly what
    ``Qwen3VLVideoProcessor.sample_frames`` returns. Qwen2-VL's processor differs: it floors ``n`` to a multiple of
    the temporal patch size (2) and takes ``arange(0, total, total / n)``, which starts at frame 0 but never reaches
    the last frame; Qwen3-VL pads an odd count itself by repeating the last frame.
    """
    _check_sampling(fps, num_frames, min_frames, max_frames)
    _check_positive("source_fps", source_fps)
    if isinstance(total_frames, bool) or not isinstance(total_frames, (int, np.integer)) or total_frames < 1:
        raise VideoError(f"cannot sample frames from a video with {total_frames!r} frames")
    total = int(total_frames)
    low = 1 if min_frames is None else int(min_frames)
    high = math.inf if max_frames is None else int(max_frames)
    if num_frames is not None:
        count = int(min(max(int(num_frames), low), high))
    elif fps is not None:
        if source_fps is None:
            raise VideoError(
                f"sampling at fps={fps} needs the source frame rate, which is unknown; pass source_fps or num_frames"
            )
        count = int(total / float(source_fps) * float(fps))
        count = int(min(max(count, low), high, total))
    else:
        count = int(min(max(total, low), high))
    return np.linspace(0, total - 1, count).round().astype(int).tolist()


def _select(
    name: str,
    total: int,
    source_fps: float | None,
    fps: float | None,
    num_frames: int | None,
    min_frames: int | None,
    max_frames: int | None,
) -> list[int]:
    """The rule above for one named source, which must have at least ``min_frames`` frames."""
    if total == 0:
        raise VideoError(f"{name}: contains no video frames")
    if min_frames is not None and total < min_frames:
        noun = "frame" if total == 1 else "frames"
        raise VideoError(f"{name}: has {total} {noun}, at least {min_frames} needed")
    try:
        return sample_frame_indices(
            total, source_fps, fps=fps, num_frames=num_frames, min_frames=min_frames, max_frames=max_frames
        )
    except VideoError as err:
        raise VideoError(f"{name}: {err}") from err


# ----------------------------------------------------------------------------------------------------------------
# In-memory frames


def _pil_to_array(image: Image.Image) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array; transparency is composited onto white, as transformers does."""
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def _array_to_tensor(array: np.ndarray, name: str) -> torch.Tensor:
    if array.dtype.kind not in "biuf":
        raise VideoError(
            f"{name}: unsupported array dtype {array.dtype}; use uint8 in [0, 255] or float in [0, 1]"
        )
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if not array.flags.writeable:  # e.g. np.asarray(PIL image); torch warns on read-only memory
        array = array.copy()
    try:
        return torch.from_numpy(np.ascontiguousarray(array))
    except TypeError as err:
        raise VideoError(f"{name}: unsupported array dtype {array.dtype}; use uint8 or float32") from err


def _channel_axis(shape: tuple[int, ...], name: str) -> int:
    """1 for (T, C, H, W), 3 for (T, H, W, C); ambiguous shapes prefer a size-3 axis, then channels first."""
    first, last = shape[1] in (1, 3, 4), shape[3] in (1, 3, 4)
    if first and last:
        if shape[1] != shape[3] and 3 in (shape[1], shape[3]):
            return 1 if shape[1] == 3 else 3
        logger.warning(
            "%s: shape %s could be (T, C, H, W) or (T, H, W, C); reading it as (T, C, H, W)", name, shape
        )
        return 1
    if first:
        return 1
    if last:
        return 3
    raise VideoError(
        f"{name}: cannot find a channel axis of size 1, 3 or 4 in shape {shape}; "
        "expected (T, C, H, W) or (T, H, W, C)"
    )


def _stack_frames(items: Sequence[Any], name: str) -> tuple[torch.Tensor, int | None]:
    """Stack a list of PIL images, arrays or tensors; returns the stack and its channel axis if already known."""
    if all(isinstance(item, Image.Image) for item in items):
        arrays = [_pil_to_array(item) for item in items]
        channel_axis: int | None = 3
    elif all(isinstance(item, (np.ndarray, torch.Tensor)) for item in items):
        arrays = list(items)
        channel_axis = None
    else:
        kinds = sorted({type(item).__name__ for item in items})
        raise VideoError(
            f"{name}: a frame list must hold only PIL images or only arrays/tensors, got {kinds}"
        )
    tensors = [item if isinstance(item, torch.Tensor) else _array_to_tensor(item, name) for item in arrays]
    first = tensors[0]
    for k, tensor in enumerate(tensors):
        if tensor.shape != first.shape or tensor.dtype != first.dtype:
            raise VideoError(
                f"{name}: frame {k} is {tensor.dtype} {tuple(tensor.shape)} but frame 0 is "
                f"{first.dtype} {tuple(first.shape)}; all frames must share size and dtype"
            )
    if first.ndim == 2:  # grayscale frames
        return torch.stack(tensors).unsqueeze(1), 1
    if first.ndim != 3:
        raise VideoError(
            f"{name}: each frame must be (C, H, W), (H, W, C) or (H, W), got shape {tuple(first.shape)}"
        )
    return torch.stack(tensors), channel_axis


def _normalize_frames(data: Any, name: str) -> torch.Tensor:
    """Any supported in-memory frames -> (T, 3, H, W) float32 in [0, 1], differentiable for float input."""
    channel_axis: int | None = None
    if isinstance(data, np.ndarray):
        tensor = _array_to_tensor(data, name)
    elif isinstance(data, torch.Tensor):
        tensor = data
    elif isinstance(data, (list, tuple)):
        if len(data) == 0:
            raise VideoError(f"{name}: contains no video frames (empty list)")
        tensor, channel_axis = _stack_frames(data, name)
    else:
        raise VideoError(
            f"{name}: cannot read frames from a {type(data).__name__}; pass a path, a (T, C, H, W) or (T, H, W, C) "
            "tensor/array, or a list of PIL images or arrays"
        )
    if tensor.ndim != 4:
        raise VideoError(
            f"{name}: frames must have 4 dims, (T, C, H, W) or (T, H, W, C), got {tensor.ndim} dims "
            f"{tuple(tensor.shape)}"
        )
    if tensor.shape[0] == 0:
        raise VideoError(f"{name}: contains no video frames (shape {tuple(tensor.shape)})")
    if channel_axis is None:
        channel_axis = _channel_axis(tuple(tensor.shape), name)
    if channel_axis == 3:
        tensor = tensor.permute(0, 3, 1, 2)
    if tensor.shape[1] not in (1, 3, 4):
        raise VideoError(f"{name}: frames have {tensor.shape[1]} channels, expected 1, 3 or 4")
    if min(tensor.shape[2:]) == 0:
        raise VideoError(f"{name}: frames have zero size {tuple(tensor.shape[2:])}")

    if tensor.dtype == torch.uint8:
        frames = tensor.to(torch.float32) / 255.0
    elif tensor.is_floating_point():
        values = tensor.detach()
        if not bool(torch.isfinite(values).all()):
            raise VideoError(f"{name}: frames contain NaN or infinite values")
        low, high = float(values.min()), float(values.max())
        if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
            hint = " (looks like [-1, 1]: pass (x + 1) / 2)" if low < -0.1 else ""
            hint = hint or (" (looks like [0, 255]: pass uint8 or x / 255)" if high > 2 else "")
            raise VideoError(
                f"{name}: float frames must lie in [0, 1], got values in [{low:.4g}, {high:.4g}]{hint}"
            )
        frames = tensor.to(torch.float32).clamp(0.0, 1.0)
    else:
        raise VideoError(
            f"{name}: unsupported dtype {tensor.dtype}; use uint8 in [0, 255] or float in [0, 1]"
        )

    channels = frames.shape[1]
    if channels == 1:
        frames = frames.expand(-1, 3, -1, -1)
    elif channels == 4:  # composite onto white, as transformers' convert_to_rgb does
        alpha = frames[:, 3:4]
        frames = frames[:, :3] * alpha + (1.0 - alpha)
    return frames.contiguous()


def _uniform_timestamps(indices: Sequence[int], fps: float | None) -> torch.Tensor:
    positions = torch.as_tensor(list(indices), dtype=torch.float64)
    return positions / fps if fps is not None else torch.full_like(positions, math.nan)


def to_video(obj: FrameInput, *, fps: float | None = None, name: str = "<video>") -> Video:
    """Normalise in-memory frames to a :class:`Video`.

    Accepts uint8 in [0, 255] or float in [0, 1] (within ``RANGE_TOLERANCE``, then clamped), as a tensor or array
    laid out (T, C, H, W) or (T, H, W, C) with 1, 3 or 4 channels, or a list of PIL images or (C, H, W) / (H, W, C) /
    (H, W) arrays or tensors. Gray is repeated to RGB, alpha is composited onto white. Float tensors keep their
    autograd graph and device. ``fps`` is the frames' rate, giving timestamps k / fps (NaN when unknown). A
    :class:`Video` is returned as it is.
    """
    _check_positive("fps", fps)
    if isinstance(obj, Video):
        return obj
    frames = _normalize_frames(obj, name)
    count = frames.shape[0]
    return Video(
        frames=frames,
        timestamps=_uniform_timestamps(range(count), fps),
        source_fps=None if fps is None else float(fps),
        duration=None if fps is None else count / float(fps),
        frame_indices=torch.arange(count),
        source=name,
    )


def _with_rate(video: Video, fps: float) -> Video:
    """A video of unknown rate with its timestamps filled in from ``fps``."""
    if video.source_fps is not None:
        if abs(video.source_fps - fps) > video.source_fps / 100:
            raise ConfigError(
                f"{video.source}: the video is {video.source_fps:.4g} fps; source_fps={fps} disagrees"
            )
        return video
    indices = torch.arange(video.num_frames) if video.frame_indices is None else video.frame_indices
    complete = torch.equal(indices, torch.arange(video.num_frames))
    return Video(
        frames=video.frames,
        timestamps=indices.to(torch.float64) / fps,
        source_fps=fps,
        duration=video.num_frames / fps if complete else None,
        frame_indices=indices,
        source=video.source,
    )


def _subsample(video: Video, indices: list[int]) -> Video:
    index = torch.as_tensor(indices, dtype=torch.long)
    source_index = index if video.frame_indices is None else video.frame_indices[index]
    return Video(
        frames=video.frames[index.to(video.frames.device)],
        timestamps=video.timestamps[index],
        source_fps=video.source_fps,
        duration=video.duration,
        frame_indices=source_index,
        source=video.source,
    )


# ----------------------------------------------------------------------------------------------------------------
# Reading files with PyAV


class _PyAVCannotRead(Exception):
    """PyAV could not open or decode the file at all; imageio gets a try."""


@dataclass
class _StreamIndex:
    """What a packet scan learns without decoding: every frame's PTS (presentation order) and the keyframes."""

    pts: list[int]
    keyframe_pts: list[int]
    time_base: Fraction
    last_duration: int
    codec: str

    def seconds(self, positions: Sequence[int]) -> torch.Tensor:
        origin = self.pts[0]
        return torch.tensor(
            [float((self.pts[k] - origin) * self.time_base) for k in positions], dtype=torch.float64
        )

    def span(self) -> Fraction:
        """Seconds from the first frame's start to the last frame's end."""
        step = self.last_duration
        if step <= 0 and len(self.pts) > 1:
            step = int(np.median(np.diff(self.pts)))
        return (self.pts[-1] - self.pts[0] + max(step, 0)) * self.time_base


def _scan_packets(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, name: str
) -> _StreamIndex:
    packets: list[tuple[int, bool, int]] = []
    listed = 0
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        listed += 1
        if packet.is_discard:
            continue
        if packet.pts is None:
            raise VideoError(
                f"{name}: the video stream has packets without timestamps; remux it (e.g. into mp4)"
            )
        packets.append((int(packet.pts), bool(packet.is_keyframe), int(packet.duration or 0)))
    declared = int(stream.frames or 0)
    if declared > listed:
        raise VideoError(
            f"{name}: the header lists {declared} frames but only {listed} could be read; the file is truncated "
            "or corrupt"
        )
    packets.sort()
    pts = [p for p, _, _ in packets]
    if len(set(pts)) != len(pts):
        raise VideoError(f"{name}: several frames share one timestamp; the file is corrupt")
    keyframes = [p for p, key, _ in packets if key]
    time_base = Fraction(stream.time_base) if stream.time_base else Fraction(1, 1)
    return _StreamIndex(
        pts=pts,
        keyframe_pts=keyframes,
        time_base=time_base,
        last_duration=packets[-1][2] if packets else 0,
        codec=stream.codec_context.name,
    )


def _source_fps(stream: av.video.stream.VideoStream, index: _StreamIndex) -> float | None:
    """Frames per second of the whole stream. The header's average rate where it agrees with the PTS (within 1 %),
    else frames / span from the PTS (GIF headers often round, VFR streams have no single rate)."""
    span = index.span()
    measured = Fraction(len(index.pts)) / span if span > 0 else None
    declared = stream.average_rate or stream.guessed_rate
    if declared and (measured is None or abs(Fraction(declared) - measured) <= measured / 100):
        return float(declared)
    return float(measured) if measured is not None else None


def _uses_seek(index: _StreamIndex, targets: list[int]) -> bool:
    """Whether seeking to keyframes decodes less than going straight through (rough cost in frame decodes)."""
    position = {p: k for k, p in enumerate(index.pts)}
    key_positions = sorted(position[p] for p in index.keyframe_pts)
    if not key_positions or key_positions[0] != 0:
        return False
    seek_cost = 0.0
    current = -1
    for target in targets:
        key = key_positions[bisect.bisect_right(key_positions, target) - 1]
        if current < 0 or key > current:
            seek_cost += _SEEK_OVERHEAD + _KEYFRAME_COST + (target - key)
        else:
            seek_cost += (
                target
                - current
                + (_KEYFRAME_COST - 1)
                * (bisect.bisect_right(key_positions, target) - bisect.bisect_right(key_positions, current))
            )
        current = target
    last = targets[-1]
    straight_cost = last + 1 + (_KEYFRAME_COST - 1) * bisect.bisect_right(key_positions, last)
    return seek_cost < straight_cost


class _RGBConverter:
    """Converts decoded frames to (H, W, 3) uint8 RGB, reusing one scaler context (building one per frame costs
    more than the conversion)."""

    def __init__(self) -> None:
        import av

        self._reformatter = av.video.reformatter.VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        return self._reformatter.reformat(frame, format="rgb24").to_ndarray()


def _decode_sequential(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    wanted: list[int],
    found: dict[int, np.ndarray],
    progress: tqdm,
) -> None:
    wanted_set = set(wanted)
    rgb = _RGBConverter()
    for frame in container.decode(stream):
        if frame.pts in wanted_set:
            found[frame.pts] = rgb(frame)
            progress.update(1)
        if frame.pts is not None and frame.pts >= wanted[-1]:
            return


def _decode_seeking(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    index: _StreamIndex,
    wanted: list[int],
    found: dict[int, np.ndarray],
    progress: tqdm,
) -> None:
    """Seek to the keyframe before each wanted frame unless the decoder is already between the two; decode to it."""
    rgb = _RGBConverter()
    frames = None  # the running decoder; it keeps going across wanted frames of one GOP
    current: int | None = None  # PTS of the last frame it gave
    for target in wanted:
        slot = bisect.bisect_right(index.keyframe_pts, target) - 1
        must_seek = (
            frames is None or current is None or current >= target or index.keyframe_pts[slot] > current
        )
        # If the decoder drops the target after a seek (open GOP, a loose seek index), retry one keyframe earlier.
        for start in (slot, slot - 1) if slot > 0 else (slot,):
            if must_seek:
                container.seek(index.keyframe_pts[start], stream=stream, backward=True)
                frames = container.decode(stream)
            frame = next((f for f in frames if f.pts is not None and f.pts >= target), None)
            current = None if frame is None else frame.pts
            if current == target:
                found[target] = rgb(frame)
                progress.update(1)
                break
            must_seek = True


def _decode(
    path: Path, name: str, index: _StreamIndex, positions: list[int], strategy: Strategy
) -> dict[int, np.ndarray]:
    """Decode the frames at the given positions; returns PTS -> (H, W, 3) uint8 for those it could decode."""
    import av

    wanted = sorted({index.pts[k] for k in positions})
    seekable = (
        index.codec in _SEEKABLE_CODECS and bool(index.keyframe_pts) and index.keyframe_pts[0] == index.pts[0]
    )
    if strategy == "seek" and not seekable:
        logger.info(
            "%s: its %s frames cannot be reached by seeking; decoding from the start", name, index.codec
        )
    seek = seekable and (
        strategy == "seek" or (strategy == "auto" and _uses_seek(index, sorted(set(positions))))
    )
    logger.debug("%s: decoding %d frames %s", name, len(wanted), "by seeking" if seek else "from the start")
    found: dict[int, np.ndarray] = {}
    progress = tqdm(
        total=len(wanted),
        desc=f"decoding {path.name}",
        leave=False,
        disable=len(wanted) < _PROGRESS_MIN_FRAMES,
    )
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            stream = container.streams.video[0]
            if seek:
                _decode_seeking(container, stream, index, wanted, found, progress)
            else:
                _decode_sequential(container, stream, wanted, found, progress)
    except av.FFmpegError as err:
        if not found:
            raise _PyAVCannotRead(f"{type(err).__name__}: {err}") from err
        raise VideoError(
            f"{name}: decoding failed after {len(found)} frames ({type(err).__name__}: {err}); the file is "
            "truncated or corrupt"
        ) from err
    finally:
        progress.close()
    return found


def _display_size(container: av.container.InputContainer) -> tuple[int, int] | None:
    """(width, height) recorded by :func:`write_video` when it padded an odd size to even."""
    comment = next((str(value) for key, value in container.metadata.items() if key.lower() == "comment"), "")
    match = _SIZE_TAG.search(comment)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _read_with_pyav(
    path: Path,
    name: str,
    fps: float | None,
    num_frames: int | None,
    min_frames: int | None,
    max_frames: int | None,
    source_fps: float | None,
    strategy: Strategy,
) -> Video:
    import av

    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as err:
        raise _PyAVCannotRead(f"{type(err).__name__}: {err}") from err
    with container:
        if not container.streams.video:
            kinds = sorted({stream.type for stream in container.streams}) or ["none"]
            raise VideoError(f"{name}: has no video stream (streams: {', '.join(kinds)})")
        stream = container.streams.video[0]
        try:
            index = _scan_packets(container, stream, name)
        except av.FFmpegError as err:
            raise _PyAVCannotRead(f"{type(err).__name__}: {err}") from err
        rate = _source_fps(stream, index) if index.pts else None
        if rate is None:
            rate = source_fps
        elif source_fps is not None and abs(source_fps - rate) > rate / 100:
            logger.warning("%s: the file says %.4g fps; ignoring source_fps=%s", name, rate, source_fps)
        display = _display_size(container)
    positions = _select(name, len(index.pts), rate, fps, num_frames, min_frames, max_frames)
    decoded = _decode(path, name, index, positions, strategy)
    missing = [k for k in sorted(set(positions)) if index.pts[k] not in decoded]
    if missing and not decoded:
        raise _PyAVCannotRead(f"none of the {len(missing)} wanted frames could be decoded")
    if missing:
        raise VideoError(
            f"{name}: {len(missing)} of {len(set(positions))} wanted frames could not be decoded (first: frame "
            f"{missing[0]}); the file is truncated or corrupt"
        )
    arrays = [decoded[index.pts[k]] for k in positions]
    if display is not None:
        width, height = display
        arrays = [array[:height, :width] for array in arrays]
    span = index.span()
    return Video(
        frames=_arrays_to_frames(arrays),
        timestamps=index.seconds(positions),
        source_fps=rate,
        duration=float(span) if span > 0 else None,
        frame_indices=torch.as_tensor(positions, dtype=torch.long),
        source=name,
    )


def _arrays_to_frames(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """(H, W, 3) uint8 arrays -> (T, 3, H, W) float32 in [0, 1] (one pass per frame, no float temporaries)."""
    height, width, _ = arrays[0].shape
    frames = torch.empty((len(arrays), 3, height, width), dtype=torch.float32)
    for k, array in enumerate(arrays):
        frames[k].copy_(torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))))
    return frames.div_(255.0)


# ----------------------------------------------------------------------------------------------------------------
# imageio fallback, folders of frames


def _read_with_imageio(
    path: Path,
    name: str,
    fps: float | None,
    num_frames: int | None,
    min_frames: int | None,
    max_frames: int | None,
    source_fps: float | None,
) -> Video:
    """Formats PyAV cannot handle (animated WebP, multi-page TIFF): decode every frame through imageio."""
    import imageio.v3 as iio

    with iio.imopen(path, "r") as file:
        arrays = list(file.iter())
        metadata = [file.metadata(index=k, exclude_applied=False) for k in range(len(arrays))]
    durations = [float(meta.get("duration") or 0.0) for meta in metadata]
    rate = next((float(meta["fps"]) for meta in metadata if meta.get("fps")), None)
    if not arrays:
        raise VideoError(f"{name}: contains no video frames")
    frames = _normalize_frames(arrays, name)
    if all(d > 0 for d in durations):  # per-frame display times in milliseconds (GIF, WebP via Pillow)
        starts = np.concatenate([[0.0], np.cumsum(durations[:-1])]) / 1000.0
        rate = len(arrays) / (sum(durations) / 1000.0)
    else:
        rate = rate or source_fps
        starts = np.arange(len(arrays)) / rate if rate else np.full(len(arrays), math.nan)
    positions = _select(name, len(arrays), rate, fps, num_frames, min_frames, max_frames)
    return Video(
        frames=frames[positions],
        timestamps=torch.as_tensor(starts[positions], dtype=torch.float64),
        source_fps=rate,
        duration=len(arrays) / rate if rate else None,
        frame_indices=torch.as_tensor(positions, dtype=torch.long),
        source=name,
    )


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _read_frame_folder(
    path: Path,
    name: str,
    fps: float | None,
    num_frames: int | None,
    min_frames: int | None,
    max_frames: int | None,
    source_fps: float | None,
) -> Video:
    """Image files sorted by name (``frame_2`` before ``frame_10``); only the selected files are opened."""
    try:
        files = sorted(
            (
                entry
                for entry in path.iterdir()
                if entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS
            ),
            key=_natural_key,
        )
    except OSError as err:
        raise VideoError(f"{name}: cannot list the folder ({err.strerror or err})") from err
    if not files:
        raise VideoError(f"{name}: folder holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    positions = _select(name, len(files), source_fps, fps, num_frames, min_frames, max_frames)
    loaded: dict[int, np.ndarray] = {}
    for k in sorted(set(positions)):
        try:
            with Image.open(files[k]) as image:
                loaded[k] = _pil_to_array(image)
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise VideoError(f"{files[k]}: cannot read frame {k} of folder {name}: {err}") from err
    first = next(iter(loaded.items()))
    for k, array in loaded.items():
        if array.shape != first[1].shape:
            raise VideoError(
                f"{files[k]}: frame {k} is {array.shape[1]}x{array.shape[0]} but {files[first[0]].name} is "
                f"{first[1].shape[1]}x{first[1].shape[0]}; all frames of {name} must share one size"
            )
    return Video(
        frames=_arrays_to_frames([loaded[k] for k in positions]),
        timestamps=_uniform_timestamps(positions, source_fps),
        source_fps=source_fps,
        duration=None if source_fps is None else len(files) / source_fps,
        frame_indices=torch.as_tensor(positions, dtype=torch.long),
        source=name,
    )


def _first_line(error: Exception, limit: int = 200) -> str:
    """An error's first line, short: imageio's ffmpeg plugin appends the whole ffmpeg log to its messages."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_unreadable(path: Path) -> str:
    """A hint at what a file that no decoder accepts actually is."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
    except OSError:
        return ""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    if all(ch.isprintable() or ch in "\r\n\t" for ch in text):
        return " (it looks like a text file)"
    return ""


def read_video(
    path: str | os.PathLike[str],
    *,
    fps: float | None = None,
    num_frames: int | None = None,
    max_frames: int | None = None,
    min_frames: int | None = None,
    source_fps: float | None = None,
    strategy: Strategy = "auto",
) -> Video:
    """Read a video file (mp4, mov, mkv, webm, gif, ...) or a folder of image frames.

    Frames are chosen by :func:`sample_frame_indices` (at most one of ``fps`` / ``num_frames``; neither keeps every
    frame up to ``max_frames``). ``min_frames`` is a demand: a source with fewer frames raises :class:`VideoError`.
    ``source_fps`` gives the rate of a folder of frames or of a file that records none. ``strategy`` picks how a
    file is decoded: ``"auto"`` seeks when that decodes fewer frames, ``"seek"`` always seeks (where the codec
    allows), ``"sequential"`` decodes from the start. Every problem raises :class:`VideoError` naming the path.
    """
    _check_sampling(fps, num_frames, min_frames, max_frames)
    _check_positive("source_fps", source_fps)
    if strategy not in ("auto", "seek", "sequential"):
        raise ConfigError(f"strategy must be 'auto', 'seek' or 'sequential', got {strategy!r}")
    path = Path(path)
    name = str(path)
    args = (fps, num_frames, min_frames, max_frames, source_fps)
    try:
        if path.is_dir():
            return _read_frame_folder(path, name, *args)
        size = path.stat().st_size
    except FileNotFoundError as err:
        raise VideoError(f"{name}: no such file or folder") from err
    except OSError as err:
        raise VideoError(f"{name}: cannot access ({err.strerror or err})") from err
    if not path.is_file():
        raise VideoError(f"{name}: not a regular file")
    if not os.access(path, os.R_OK):
        raise VideoError(f"{name}: not readable (permission denied)")
    if size == 0:
        raise VideoError(f"{name}: file is empty (0 bytes)")
    try:
        return _read_with_pyav(path, name, *args, strategy)
    except _PyAVCannotRead as pyav_error:
        try:
            video = _read_with_imageio(path, name, *args)
        except VideoError:
            raise
        except Exception as imageio_error:  # noqa: BLE001 - imageio plugins raise many types; PyAV's error is the cause
            raise VideoError(
                f"{name}: not a readable video (corrupt, truncated or not a video format)"
                f"{_describe_unreadable(path)}: PyAV: {pyav_error}; "
                f"imageio: {type(imageio_error).__name__}: {_first_line(imageio_error)}"
            ) from (pyav_error.__cause__ or pyav_error)
        logger.info("%s: PyAV could not read it (%s); read through imageio", name, pyav_error)
        return video


def load_video(
    source: str | os.PathLike[str] | FrameInput,
    *,
    fps: float | None = None,
    num_frames: int | None = None,
    max_frames: int | None = None,
    min_frames: int | None = None,
    source_fps: float | None = None,
    name: str | None = None,
) -> Video:
    """Read a path with :func:`read_video` or normalise in-memory frames with :func:`to_video`, then sample.

    For in-memory frames ``source_fps`` is their rate (needed for ``fps`` sampling and timestamps) and ``name``
    labels them in errors; a :class:`Video` keeps its own rate (``source_fps`` fills in an unknown one). Sampling
    follows :func:`sample_frame_indices`; ``min_frames`` is a demand, as in :func:`read_video`.
    """
    _check_sampling(fps, num_frames, min_frames, max_frames)
    _check_positive("source_fps", source_fps)
    if isinstance(source, (str, os.PathLike)):
        return read_video(
            source,
            fps=fps,
            num_frames=num_frames,
            max_frames=max_frames,
            min_frames=min_frames,
            source_fps=source_fps,
        )
    if isinstance(source, Video):
        video = source if source_fps is None else _with_rate(source, float(source_fps))
    else:
        video = to_video(source, fps=source_fps, name=name or "<video>")
    if fps is None and num_frames is None and max_frames is None and min_frames is None:
        return video
    positions = _select(
        video.source, video.num_frames, video.source_fps, fps, num_frames, min_frames, max_frames
    )
    return _subsample(video, positions)


# ----------------------------------------------------------------------------------------------------------------
# Writing


def _rate(fps: float) -> Fraction:
    """An exact frame rate; 29.97002997 (30000/1001) and 23.976... come back as the NTSC fractions."""
    return Fraction(fps).limit_denominator(1001)


def _encode_all(
    container: av.container.OutputContainer,
    stream: av.video.stream.VideoStream,
    frames: Iterable[av.VideoFrame],
    total: int,
    desc: str,
) -> None:
    """Encode and mux frames as they come (one frame in memory at a time), then flush the encoder."""
    for frame in tqdm(frames, total=total, desc=desc, leave=False, disable=total < _PROGRESS_MIN_FRAMES):
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def _rgb_frames(arrays: np.ndarray) -> Iterator[av.VideoFrame]:
    import av

    for k, array in enumerate(arrays):
        frame = av.VideoFrame.from_ndarray(array, format="rgb24")
        frame.pts = k
        yield frame


def _write_encoded(
    arrays: np.ndarray,
    path: Path,
    fps: float,
    codec: str,
    crf: int,
    keyframe_interval: int,
    options: Mapping[str, str],
) -> None:
    """H.264 (mp4, mov, mkv) or VP9 (webm) in yuv420p, or lossless H.264 in RGB (``libx264rgb``, crf 0); no B-frames,
    a keyframe every ``keyframe_interval`` frames."""
    import av

    height, width = arrays.shape[1:3]
    container_options = {"movflags": "+faststart"} if path.suffix.lower() in (".mp4", ".mov") else {}
    with av.open(str(path), "w", options=container_options) as container:
        if codec == "libx264" and (height % 2 or width % 2):
            # 4:2:0 H.264 needs even sides: pad by repeating the edge and record the true size for read_video.
            arrays = np.pad(arrays, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
            container.metadata["comment"] = f"descore:size={width}x{height}"
        stream = container.add_stream(codec, rate=_rate(fps))
        stream.width, stream.height = arrays.shape[2], arrays.shape[1]
        stream.pix_fmt = "rgb24" if codec == "libx264rgb" else "yuv420p"
        stream.codec_context.gop_size = keyframe_interval
        stream.codec_context.max_b_frames = 0
        if codec in ("libx264", "libx264rgb"):
            base = {"crf": str(crf), "preset": "medium"}
        else:  # VP9 in constant-quality mode, no hidden alt-ref frames
            base = {
                "crf": str(crf),
                "b": "0",
                "deadline": "good",
                "cpu-used": "5",
                "row-mt": "1",
                "lag-in-frames": "0",
            }
        stream.options = {**base, **options}
        _encode_all(container, stream, _rgb_frames(arrays), len(arrays), f"writing {path.name}")


def _palette_frames(arrays: np.ndarray, fps: float) -> Iterator[av.VideoFrame]:
    """Each frame quantised to its own 256 colours (median cut, no dithering), stamped in hundredths of a second."""
    import av

    for k, array in enumerate(arrays):
        quantized = Image.fromarray(array).quantize(
            256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
        palette = np.zeros((256, 4), np.uint8)  # ARGB
        palette[:, 0] = (
            255  # every entry opaque: FFmpeg would treat a transparent one as "keep the last frame"
        )
        colours = np.asarray(quantized.getpalette()[: 256 * 3], np.uint8).reshape(-1, 3)
        palette[: len(colours), 1:] = colours
        frame = av.VideoFrame.from_ndarray((np.asarray(quantized), palette), format="pal8")
        frame.pts = round(100 * k / fps)
        frame.time_base = Fraction(1, 100)
        yield frame


def _write_gif(arrays: np.ndarray, path: Path, fps: float) -> None:
    """GIF through FFmpeg's encoder, each frame with its own palette (Pillow would merge repeated frames).

    GIF delays are whole hundredths of a second: frame k starts at round(100 k / fps) cs, so the mean rate is kept
    while single delays vary by 1 cs (24 fps -> 4, 4, 4, 5, ... cs).
    """
    import av

    if fps > 50:
        logger.warning(
            "%s: browsers slow GIFs above 50 fps down to 10 fps; writing %.4g fps anyway", path, fps
        )
    height, width = arrays.shape[1:3]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("gif", rate=_rate(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "pal8"
        stream.codec_context.time_base = Fraction(1, 100)
        # Each frame has its own palette, so the encoder's inter-frame tricks (which compare palette indices) are off.
        stream.options = {"gifflags": "0"}
        _encode_all(container, stream, _palette_frames(arrays, fps), len(arrays), f"writing {path.name}")


_WRITERS = {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9", ".gif": "gif"}
_DEFAULT_CRF = {"libx264": 18, "libvpx-vp9": 30, "libx264rgb": 0}
_LOSSLESS = tuple(suffix for suffix, codec in _WRITERS.items() if codec == "libx264")


def write_video(
    frames: FrameInput,
    path: str | os.PathLike[str],
    *,
    fps: float,
    crf: int | None = None,
    keyframe_interval: int | None = None,
    options: Mapping[str, str] | None = None,
    lossless: bool = False,
) -> Path:
    """Write frames (any input :func:`to_video` accepts, or a :class:`Video`) to mp4/mov/mkv, webm or gif.

    mp4/mov/mkv: H.264 (libx264, preset medium, ``crf`` default 18), yuv420p, no B-frames, ``+faststart``; odd sides
    are padded by one edge row/column and the true size is stored in the file so :func:`read_video` crops it back.
    webm: VP9 (``crf`` default 30). Both put a keyframe every ``keyframe_interval`` frames (default
    ``KEYFRAME_SECONDS`` of video, at least 1 frame) so that sparse sampling can seek; ``options`` are extra encoder
    options (e.g. ``{"preset": "veryfast"}``). gif: 256 colours per frame, delays in hundredths of a second (``crf``,
    ``keyframe_interval`` and ``options`` do not apply). ``lossless`` (mp4/mov/mkv only): RGB H.264 at crf 0
    (``libx264rgb``), so :func:`read_video` returns exactly the 8-bit frames written (several times larger files; for
    data whose labels were measured on the raw frames). The file appears only once complete.
    """
    import av

    path = Path(path)
    _check_positive("fps", fps)
    _check_count("keyframe_interval", keyframe_interval)
    codec = _WRITERS.get(path.suffix.lower())
    if codec is None:
        raise ConfigError(
            f"{path}: cannot write {path.suffix or 'files without extension'!r}; use {sorted(_WRITERS)}"
        )
    if lossless:
        if codec != "libx264":
            raise ConfigError(
                f"{path}: lossless writing is available for {sorted(_LOSSLESS)}, not {path.suffix!r}"
            )
        if crf not in (None, 0):
            raise ConfigError(f"{path}: lossless writing uses crf 0; got crf={crf}")
        codec = "libx264rgb"
    if codec == "gif" and fps > 100:
        raise ConfigError(f"{path}: GIF cannot store more than 100 frames per second, got fps={fps}")
    video = frames if isinstance(frames, Video) else to_video(frames, name=f"frames for {path}")
    arrays = (
        (video.frames.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    )
    interval = keyframe_interval or max(1, round(fps * KEYFRAME_SECONDS))
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if codec == "gif":
            _write_gif(arrays, partial, fps)
        else:
            crf_value = _DEFAULT_CRF[codec] if crf is None else crf
            _write_encoded(arrays, partial, fps, codec, crf_value, interval, dict(options or {}))
        os.replace(partial, path)
    except (av.FFmpegError, OSError) as err:
        partial.unlink(missing_ok=True)
        raise VideoError(f"{path}: cannot write the video: {err}") from err
    return path


__all__ = [
    "IMAGE_EXTENSIONS",
    "KEYFRAME_SECONDS",
    "QWEN3_VL_FPS",
    "QWEN3_VL_MAX_FRAMES",
    "QWEN3_VL_MIN_FRAMES",
    "RANGE_TOLERANCE",
    "Video",
    "load_video",
    "read_video",
    "sample_frame_indices",
    "to_video",
    "write_video",
]
