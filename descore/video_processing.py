"""Differentiable Qwen-VL video preprocessing in pure torch (no torchvision).

Replicates transformers' ``Qwen3VLVideoProcessor`` (Qwen3-VL, Qwen3-VL-MoE) and ``Qwen2VLVideoProcessor`` (Qwen2-VL,
Qwen2.5-VL): smart resize to multiples of ``patch_size * merge_size`` within a pixel budget, antialiased resize
exactly as ``torchvision.transforms.v2.functional.resize``, rescale and normalise, temporal padding by repeating the
last frame, and the official patch order. Frame sampling is not done here: frames arrive already sampled.

Two input paths:

* float frames in [0, 1] (the descore convention): every step is differentiable, so gradients reach the frames.
  Equal (to float precision) to the official processor fed the same float frames with ``do_rescale=False``.
* uint8 frames (0..255): reproduces the official uint8 path bit for bit. On CPU torchvision resizes uint8 with torch's
  native uint8 kernel, which rounds and clamps between its horizontal and vertical passes; this differs from the float
  path by a few 8-bit levels on high-frequency content. ``quantize=True`` on float frames gives the uint8 values in
  the forward pass and the float path's gradient in the backward pass (straight-through).
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import BatchFeature

from descore.errors import ConfigError, PreprocessingError

logger = logging.getLogger(__name__)

VIDEO_PROCESSOR_NAME = "video_preprocessor_config.json"
PROCESSOR_NAME = "processor_config.json"
IMAGE_PROCESSOR_NAME = "preprocessor_config.json"

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_STANDARD_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STANDARD_STD = (0.5, 0.5, 0.5)

# PIL resampling codes used in the official config files -> torch interpolate mode.
_RESAMPLE_MODES = {0: "nearest-exact", 2: "bilinear", 3: "bicubic"}
_RESAMPLE_NAMES = {0: "NEAREST", 1: "LANCZOS", 2: "BILINEAR", 3: "BICUBIC", 4: "BOX", 5: "HAMMING"}


@dataclass(frozen=True)
class _Family:
    video_processor_type: str
    patch_size: int
    size: tuple[int, int]  # (shortest_edge, longest_edge) = (min_pixels, max_pixels)
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    max_video_tokens: int
    budget_over_frames: bool  # Qwen3-VL: the pixel budget covers all frames; Qwen2-VL: one frame
    sampling: dict[str, Any]  # frame-sampling keys the official class writes; carried, not used here


FAMILIES: dict[str, _Family] = {
    "qwen3_vl": _Family(
        video_processor_type="Qwen3VLVideoProcessor",
        patch_size=16,
        size=(128 * 32 * 32, 32 * 32 * 768),
        image_mean=IMAGENET_STANDARD_MEAN,
        image_std=IMAGENET_STANDARD_STD,
        max_video_tokens=768,
        budget_over_frames=True,
        sampling={
            "do_sample_frames": True,
            "fps": 2,
            "min_frames": 4,
            "max_frames": 768,
            "return_metadata": False,
        },
    ),
    "qwen2_vl": _Family(
        video_processor_type="Qwen2VLVideoProcessor",
        patch_size=14,
        size=(128 * 28 * 28, 28 * 28 * 768),
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
        max_video_tokens=128000,
        budget_over_frames=False,
        sampling={"do_sample_frames": False, "min_frames": 4, "max_frames": 768, "return_metadata": False},
    ),
}
_FAMILY_BY_TYPE = {fam.video_processor_type: name for name, fam in FAMILIES.items()}
# processor classes whose checkpoints use each video family (legacy configs name only the processor class)
FAMILY_BY_PROCESSOR_CLASS = {
    "Qwen3VLProcessor": "qwen3_vl",
    "Qwen2_5_VLProcessor": "qwen2_vl",
    "Qwen2VLProcessor": "qwen2_vl",
}
# keys that describe the file rather than the processor: recomputed on save
_DESCRIPTIVE_KEYS = ("video_processor_type", "image_processor_type", "processor_class")


def smart_resize(
    height: int,
    width: int,
    factor: int,
    min_pixels: int,
    max_pixels: int,
    num_frames: int | None = None,
    temporal_factor: int = 2,
) -> tuple[int, int]:
    """Target (height, width): multiples of ``factor``, aspect ratio kept, pixels within [min_pixels, max_pixels].

    With ``num_frames=None`` this is Qwen2-VL's ``smart_resize`` (budget per frame). With ``num_frames`` it is
    Qwen3-VL's (budget over all frames, frame count rounded to ``temporal_factor``). Unlike the official functions,
    a budget that no grid can meet raises instead of silently exceeding it.
    """
    if height <= 0 or width <= 0:
        raise PreprocessingError(f"frame size {height}x{width} is empty: height and width must be positive")
    if min_pixels <= 0 or max_pixels < min_pixels:
        raise PreprocessingError(
            f"pixel budget min_pixels={min_pixels}, max_pixels={max_pixels} is invalid: "
            "need 0 < min_pixels <= max_pixels"
        )
    frames = 1
    if num_frames is not None:
        if num_frames < temporal_factor:
            raise PreprocessingError(
                f"a video of {num_frames} frame(s) is too short: Qwen3-VL needs at least "
                f"temporal_patch_size={temporal_factor} frames"
            )
        frames = num_frames
        if height < factor or width < factor:
            scale = max(factor / height, factor / width)
            height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > 200:
        raise PreprocessingError(
            f"frame size {height}x{width} has aspect ratio {max(height, width) / min(height, width):.1f}: "
            "Qwen-VL accepts at most 200"
        )
    t_bar = frames if num_frames is None else round(num_frames / temporal_factor) * temporal_factor
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt((frames * height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    else:
        return h_bar, w_bar
    # The official comparisons count t_bar frames and its scaling all frames: a size that meets the budget under
    # at least one of the two counts is accepted (as before for even counts; 9 frames count as 8, like the comparison).
    counted = min(frames, t_bar)
    if counted * h_bar * w_bar > max_pixels:
        raise PreprocessingError(
            f"pixel budget [min_pixels={min_pixels}, max_pixels={max_pixels}] cannot be met by {frames} frame(s) "
            f"of {height}x{width}: the nearest size with sides multiple of {factor} (patch_size x merge_size), "
            f"{h_bar}x{w_bar}, needs {counted * h_bar * w_bar} pixels; raise max_pixels (size['longest_edge'])"
        )
    return h_bar, w_bar


def _native_uint8_resize(mode: str, device: torch.device) -> bool:
    """Whether torchvision resizes uint8 with torch's native uint8 kernel (else: float, then round)."""
    if mode == "nearest-exact":
        return True
    if device.type != "cpu":
        return False
    if mode == "bilinear":
        return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") or platform.machine() in (
            "aarch64",
            "arm64",
        )
    return mode == "bicubic"


def resize_frames(frames: torch.Tensor, height: int, width: int, resample: int = 3) -> torch.Tensor:
    """Resize ``(..., C, H, W)`` frames exactly as ``torchvision.transforms.v2.functional.resize`` (antialias on).

    ``resample`` is the PIL code of the official configs (3 bicubic, 2 bilinear, 0 nearest). Float frames stay float
    and differentiable (no clamping, as torchvision); uint8 frames follow torchvision's uint8 rules.
    """
    if resample not in _RESAMPLE_MODES:
        name = _RESAMPLE_NAMES.get(resample, str(resample))
        raise ConfigError(
            f"resample={resample} ({name}) is not supported: use 3 (bicubic), 2 (bilinear) or 0 (nearest)"
        )
    mode = _RESAMPLE_MODES[resample]
    *lead, channels, old_h, old_w = frames.shape
    if (old_h, old_w) == (height, width) or frames.numel() == 0:
        return frames
    antialias = mode != "nearest-exact"
    align_corners = None if mode == "nearest-exact" else False
    dtype = frames.dtype
    if dtype != torch.uint8 and not dtype.is_floating_point:
        raise PreprocessingError(
            f"frames have dtype {dtype}: expected float frames in [0, 1] or uint8 frames"
        )
    # torchvision interpolates float32/float64 as they are, uint8 natively where torch has a uint8 kernel, and
    # everything else in float32 (uint8: clamped for bicubic, then rounded) before casting back
    native = dtype in (torch.float32, torch.float64) or (
        dtype == torch.uint8 and _native_uint8_resize(mode, frames.device)
    )
    flat = frames.reshape(-1, channels, old_h, old_w)
    out = F.interpolate(
        flat if native else flat.to(torch.float32),
        size=[height, width],
        mode=mode,
        align_corners=align_corners,
        antialias=antialias,
    )
    if not native:
        if dtype == torch.uint8:
            out = (out.clamp(0, 255) if mode == "bicubic" else out).round()
        out = out.to(dtype)
    return out.reshape(*lead, channels, height, width)


def pad_temporal(frames: torch.Tensor, temporal_patch_size: int) -> torch.Tensor:
    """Repeat the last frame of ``(T, ...)`` frames until T is a multiple of ``temporal_patch_size``."""
    pad = -frames.shape[0] % temporal_patch_size
    if pad == 0:
        return frames
    return torch.cat((frames, frames[-1:].expand(pad, *frames.shape[1:])), dim=0)


def patchify(
    frames: torch.Tensor, patch_size: int, merge_size: int, temporal_patch_size: int
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """``(T, C, H, W)`` -> ``(grid_t * grid_h * grid_w, C * temporal_patch_size * patch_size**2)`` in the official order.

    Frames are padded in time first; H and W must be multiples of ``patch_size * merge_size``.
    """
    frames = pad_temporal(frames, temporal_patch_size)
    num_frames, channels, height, width = frames.shape
    block = patch_size * merge_size
    if height % block or width % block:
        raise PreprocessingError(
            f"frame size {height}x{width} is not a multiple of patch_size x merge_size = {block}: "
            "resize first (do_resize=True)"
        )
    grid_t, grid_h, grid_w = num_frames // temporal_patch_size, height // patch_size, width // patch_size
    patches = frames.reshape(
        grid_t,
        temporal_patch_size,
        channels,
        grid_h // merge_size,
        merge_size,
        patch_size,
        grid_w // merge_size,
        merge_size,
        patch_size,
    )
    patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    flat = patches.reshape(grid_t * grid_h * grid_w, channels * temporal_patch_size * patch_size * patch_size)
    return flat, (grid_t, grid_h, grid_w)


def temporal_patch_timestamps(timestamps: Sequence[float], temporal_patch_size: int) -> list[float]:
    """Seconds per temporal patch, as Qwen3-VL writes them: pad with the last frame, average first and last of each.

    ``timestamps`` are the sampled frames' times in seconds (official: ``frames_indices / fps``).
    """
    times = [float(t) for t in timestamps]
    if not times:
        raise PreprocessingError("video timestamps are empty: need one timestamp (seconds) per frame")
    times += [times[-1]] * (-len(times) % temporal_patch_size)
    return [
        (times[i] + times[i + temporal_patch_size - 1]) / 2 for i in range(0, len(times), temporal_patch_size)
    ]


def num_llm_tokens(grid_thw: Sequence[int] | torch.Tensor, merge_size: int) -> int:
    """Number of LLM tokens (``<|video_pad|>``) for a video grid: ``t * h * w / merge_size**2``."""
    grid_t, grid_h, grid_w = (int(g) for g in grid_thw)
    return grid_t * grid_h * grid_w // merge_size**2


@dataclass
class QwenVideoProcessor:
    """Pure-torch twin of the official Qwen-VL video processors, read from and written to their config files.

    ``family`` is ``"qwen3_vl"`` (Qwen3VLVideoProcessor) or ``"qwen2_vl"`` (Qwen2VLVideoProcessor, also Qwen2.5-VL).
    ``min_pixels`` / ``max_pixels`` are the config's ``size["shortest_edge"]`` / ``size["longest_edge"]``: a budget
    over all frames for Qwen3-VL, per frame for Qwen2-VL. ``extra`` carries the config keys this class does not use
    (frame sampling is done by ``descore.video_io``) so that files round-trip.
    """

    family: str = "qwen3_vl"
    patch_size: int | None = None
    temporal_patch_size: int = 2
    merge_size: int = 2
    min_pixels: int | None = None
    max_pixels: int | None = None
    image_mean: tuple[float, ...] | None = None
    image_std: tuple[float, ...] | None = None
    do_resize: bool = True
    resample: int = 3
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    do_convert_rgb: bool = True
    cap_pixels_per_frame: bool | None = None
    max_video_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ConfigError(
                f"video processor family {self.family!r} is unknown: expected one of {sorted(FAMILIES)}"
            )
        fam = FAMILIES[self.family]
        self.patch_size = fam.patch_size if self.patch_size is None else int(self.patch_size)
        self.min_pixels = fam.size[0] if self.min_pixels is None else int(self.min_pixels)
        self.max_pixels = fam.size[1] if self.max_pixels is None else int(self.max_pixels)
        self.image_mean = tuple(
            float(v) for v in (fam.image_mean if self.image_mean is None else self.image_mean)
        )
        self.image_std = tuple(
            float(v) for v in (fam.image_std if self.image_std is None else self.image_std)
        )
        self.max_video_tokens = (
            fam.max_video_tokens if self.max_video_tokens is None else int(self.max_video_tokens)
        )
        self.resample = int(self.resample)
        self.extra = {**fam.sampling, **self.extra}
        for name in ("patch_size", "temporal_patch_size", "merge_size"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"video processor {name}={getattr(self, name)} must be a positive integer")
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ConfigError(
                f"video processor size {{'shortest_edge': {self.min_pixels}, 'longest_edge': {self.max_pixels}}} "
                "is invalid: need 0 < shortest_edge (min pixels) <= longest_edge (max pixels)"
            )
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ConfigError(
                f"video processor image_mean={self.image_mean}, image_std={self.image_std}: "
                "need 3 values each and std > 0"
            )
        if self.resample not in _RESAMPLE_MODES:
            name = _RESAMPLE_NAMES.get(self.resample, str(self.resample))
            raise ConfigError(
                f"video processor resample={self.resample} ({name}) is not supported: use 3 (bicubic), "
                "2 (bilinear) or 0 (nearest)"
            )

    # ----------------------------------------------------------------- config files
    @classmethod
    def from_dict(cls, config: Mapping[str, Any], family: str | None = None) -> QwenVideoProcessor:
        """Build from an official video (or legacy image) processor dict, e.g. ``video_preprocessor_config.json``."""
        config = dict(config)
        family = family or cls._family_of(config)
        fam = FAMILIES[family]
        size = config.pop("size", None)
        size = dict(size) if size is not None else {"shortest_edge": fam.size[0], "longest_edge": fam.size[1]}
        # Qwen2VLVideoProcessor: legacy min_pixels / max_pixels override size
        for legacy, key in (("min_pixels", "shortest_edge"), ("max_pixels", "longest_edge")):
            value = config.pop(legacy, None)
            if value is not None:
                size[key] = value
        if not size.get("shortest_edge") or not size.get("longest_edge"):
            raise ConfigError(
                f"video processor size={size} must contain 'shortest_edge' and 'longest_edge' (min / max pixels)"
            )
        for key in _DESCRIPTIVE_KEYS:
            config.pop(key, None)
        names = (
            "patch_size",
            "temporal_patch_size",
            "merge_size",
            "image_mean",
            "image_std",
            "do_resize",
            "resample",
            "do_rescale",
            "rescale_factor",
            "do_normalize",
            "do_convert_rgb",
            "cap_pixels_per_frame",
            "max_video_tokens",
        )
        known = {name: config.pop(name) for name in names if name in config and config[name] is not None}
        return cls(
            family=family,
            min_pixels=size["shortest_edge"],
            max_pixels=size["longest_edge"],
            extra=config,
            **known,
        )

    @staticmethod
    def _family_of(config: Mapping[str, Any]) -> str:
        kind = config.get("video_processor_type")
        if kind in _FAMILY_BY_TYPE:
            return _FAMILY_BY_TYPE[kind]
        processor_class = config.get("processor_class")
        if processor_class in FAMILY_BY_PROCESSOR_CLASS:
            return FAMILY_BY_PROCESSOR_CLASS[processor_class]
        raise ConfigError(
            f"cannot tell the Qwen-VL family of this processor config (video_processor_type={kind!r}, "
            f"processor_class={processor_class!r}): expected one of {sorted(_FAMILY_BY_TYPE)} or "
            f"{sorted(FAMILY_BY_PROCESSOR_CLASS)}, or pass family="
        )

    def to_dict(self) -> dict[str, Any]:
        """The official config dict (the keys ``Qwen*VideoProcessor.to_dict`` writes)."""
        config: dict[str, Any] = dict(self.extra)
        config.update(
            do_convert_rgb=self.do_convert_rgb,
            do_normalize=self.do_normalize,
            do_rescale=self.do_rescale,
            do_resize=self.do_resize,
            image_mean=list(self.image_mean),
            image_std=list(self.image_std),
            max_video_tokens=self.max_video_tokens,
            merge_size=self.merge_size,
            patch_size=self.patch_size,
            resample=self.resample,
            rescale_factor=self.rescale_factor,
            size={"longest_edge": self.max_pixels, "shortest_edge": self.min_pixels},
            temporal_patch_size=self.temporal_patch_size,
            video_processor_type=FAMILIES[self.family].video_processor_type,
        )
        if self.cap_pixels_per_frame is not None:
            config["cap_pixels_per_frame"] = self.cap_pixels_per_frame
        return dict(sorted(config.items()))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> QwenVideoProcessor:
        """Load from a checkpoint directory, with the official priority: ``processor_config.json`` (nested
        ``video_processor``), then ``video_preprocessor_config.json``, then ``preprocessor_config.json``."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ConfigError(
                f"{directory}: not a directory (expected a checkpoint folder with processor configs)"
            )
        nested = directory / PROCESSOR_NAME
        if nested.is_file():
            processor = read_config_json(nested)
            if "video_processor" in processor:
                video = dict(processor["video_processor"])
                video.setdefault("processor_class", processor.get("processor_class"))
                return cls._from_file_dict(video, nested)
        for name in (VIDEO_PROCESSOR_NAME, IMAGE_PROCESSOR_NAME):
            path = directory / name
            if path.is_file():
                return cls._from_file_dict(read_config_json(path), path)
        raise ConfigError(
            f"{directory}: no video processor config found (looked for {PROCESSOR_NAME} with 'video_processor', "
            f"{VIDEO_PROCESSOR_NAME}, {IMAGE_PROCESSOR_NAME})"
        )

    @classmethod
    def _from_file_dict(cls, config: dict[str, Any], path: Path) -> QwenVideoProcessor:
        try:
            return cls.from_dict(config)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``video_preprocessor_config.json`` (official format) into ``directory``; returns its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / VIDEO_PROCESSOR_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    # ----------------------------------------------------------------- sizes and tokens
    @property
    def factor(self) -> int:
        """Spatial block size: frame sides are resized to multiples of ``patch_size * merge_size``."""
        return self.patch_size * self.merge_size

    def _max_pixels_for(self, num_frames: int) -> int:
        """The official per-call budget, with the optional ``cap_pixels_per_frame`` rule of each family."""
        if not self.cap_pixels_per_frame:
            return self.max_pixels
        if FAMILIES[self.family].budget_over_frames:
            frame_cap = self.max_video_tokens * self.factor * self.factor
            per_frame = max(min(frame_cap, self.max_pixels // num_frames), int(self.min_pixels * 1.05))
            return per_frame * num_frames
        total = int(self.max_video_tokens * self.factor * self.factor * 0.9)
        return max(
            min(self.max_pixels, total * self.temporal_patch_size // num_frames), int(self.min_pixels * 1.05)
        )

    def target_size(self, num_frames: int, height: int, width: int) -> tuple[int, int]:
        """(height, width) the frames are resized to."""
        if not self.do_resize:
            return height, width
        budget_over_frames = FAMILIES[self.family].budget_over_frames
        return smart_resize(
            height,
            width,
            factor=self.factor,
            min_pixels=self.min_pixels,
            max_pixels=self._max_pixels_for(num_frames),
            num_frames=num_frames if budget_over_frames else None,
            temporal_factor=self.temporal_patch_size,
        )

    def grid_thw(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(grid_t, grid_h, grid_w) in patches for a video of this size."""
        resized_h, resized_w = self.target_size(num_frames, height, width)
        grid_t = -(-num_frames // self.temporal_patch_size)
        return grid_t, resized_h // self.patch_size, resized_w // self.patch_size

    def num_video_tokens(self, num_frames: int, height: int, width: int) -> int:
        """Number of LLM video tokens the video expands to."""
        return num_llm_tokens(self.grid_thw(num_frames, height, width), self.merge_size)

    # ----------------------------------------------------------------- pixels
    def _check_frames(self, frames: torch.Tensor, index: int) -> torch.Tensor:
        if not isinstance(frames, torch.Tensor):
            raise PreprocessingError(
                f"video {index}: expected a torch.Tensor (T, C, H, W), got {type(frames).__name__}"
            )
        if frames.ndim != 4:
            raise PreprocessingError(
                f"video {index}: frames have shape {tuple(frames.shape)}: expected (T, C, H, W) with C = 3 (or 1)"
            )
        if frames.shape[1] not in (1, 3):
            raise PreprocessingError(
                f"video {index}: frames have shape {tuple(frames.shape)} with {frames.shape[1]} channels: expected "
                "(T, C, H, W) with C = 3 (RGB) or 1 (grey); channels-last input must be permuted first"
            )
        if frames.shape[0] == 0 or frames.shape[2] == 0 or frames.shape[3] == 0:
            raise PreprocessingError(f"video {index}: frames have shape {tuple(frames.shape)}: no pixels")
        if frames.dtype != torch.uint8 and not frames.dtype.is_floating_point:
            raise PreprocessingError(
                f"video {index}: frames have dtype {frames.dtype}: expected float frames in [0, 1] or uint8"
            )
        if frames.dtype.is_floating_point:
            low, high = float(frames.detach().amin()), float(frames.detach().amax())
            if not (math.isfinite(low) and math.isfinite(high)) or low < -0.5 or high > 1.5:
                raise PreprocessingError(
                    f"video {index}: float frames range over [{low:.3g}, {high:.3g}]: expected values in [0, 1] "
                    "(divide 0..255 frames by 255, map [-1, 1] frames with (x + 1) / 2)"
                )
        if frames.shape[1] == 1:
            if not self.do_convert_rgb:
                raise PreprocessingError(
                    f"video {index}: frames have 1 channel but do_convert_rgb is off: pass RGB frames (T, 3, H, W)"
                )
            frames = frames.expand(-1, 3, -1, -1)
        return frames

    def _normalize(self, frames: torch.Tensor, uint8_scale: bool) -> torch.Tensor:
        """Official fused rescale + normalise. ``uint8_scale``: values are 0..255 (else: [0, 1])."""
        if uint8_scale:
            if self.do_rescale and self.do_normalize:
                mean = torch.tensor(self.image_mean) * (1.0 / self.rescale_factor)
                std = torch.tensor(self.image_std) * (1.0 / self.rescale_factor)
                return self._affine(frames.to(torch.float32), mean, std)
            if self.do_normalize:
                return self._affine(
                    frames.to(torch.float32), torch.tensor(self.image_mean), torch.tensor(self.image_std)
                )
            if self.do_rescale:
                return frames * self.rescale_factor
            return frames.to(torch.float32)
        # float frames in [0, 1] stand for uint8 / 255: bring them to the scale the official pipeline sees
        scale = (255.0 * self.rescale_factor) if self.do_rescale else 255.0
        if not math.isclose(scale, 1.0, rel_tol=1e-12):
            frames = frames * scale
        if self.do_normalize:
            return self._affine(
                frames.to(torch.float32), torch.tensor(self.image_mean), torch.tensor(self.image_std)
            )
        return frames.to(torch.float32)

    @staticmethod
    def _affine(frames: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        mean = mean.to(device=frames.device, dtype=frames.dtype).view(-1, 1, 1)
        std = std.to(device=frames.device, dtype=frames.dtype).view(-1, 1, 1)
        return (frames - mean) / std

    def preprocess_video(
        self, frames: torch.Tensor, quantize: bool = False, index: int = 0
    ) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """One video ``(T, C, H, W)`` -> (patches ``(grid_t*grid_h*grid_w, C*tp*p*p)`` float32, grid_thw).

        Float frames in [0, 1] keep gradients. uint8 frames match the official uint8 path exactly. ``quantize=True``
        (float frames only) returns the official uint8 path's values for ``round(frames * 255)`` with the float
        path's gradient (straight-through estimator).
        """
        frames = self._check_frames(frames, index)
        num_frames, _, height, width = frames.shape
        try:
            new_h, new_w = self.target_size(num_frames, height, width)
        except PreprocessingError as err:
            raise PreprocessingError(
                f"video {index} ({num_frames} frames of {height}x{width}): {err}"
            ) from None
        if frames.dtype == torch.uint8:
            pixels = self._normalize(resize_frames(frames, new_h, new_w, self.resample), uint8_scale=True)
        else:
            pixels = self._normalize(resize_frames(frames, new_h, new_w, self.resample), uint8_scale=False)
            if quantize:
                levels = (frames.detach() * 255).clamp(0, 255).round().to(torch.uint8)
                exact = self._normalize(resize_frames(levels, new_h, new_w, self.resample), uint8_scale=True)
                pixels = pixels + (exact - pixels).detach()
        try:
            return patchify(pixels, self.patch_size, self.merge_size, self.temporal_patch_size)
        except PreprocessingError as err:
            raise PreprocessingError(f"video {index}: {err}") from None

    def frame_budget(
        self, num_frames: int, min_pixels: int | None, max_pixels: int | None
    ) -> tuple[int | None, int | None]:
        """Per-frame pixel bounds in this family's native units (over the temporally padded frames for Qwen3-VL)."""
        if not FAMILIES[self.family].budget_over_frames:
            return min_pixels, max_pixels
        t = self.temporal_patch_size
        frames = max(t, round(num_frames / t) * t)
        return (
            None if min_pixels is None else min_pixels * frames,
            None if max_pixels is None else max_pixels * frames,
        )

    def with_budget(self, min_pixels: int | None = None, max_pixels: int | None = None) -> QwenVideoProcessor:
        """A copy with another pixel budget (``None`` keeps the current value), like the official ``size=`` kwarg."""
        if min_pixels is None and max_pixels is None:
            return self
        low = self.min_pixels if min_pixels is None else min_pixels
        high = self.max_pixels if max_pixels is None else max_pixels
        if not 0 < low <= high:
            raise PreprocessingError(
                f"pixel budget min_pixels={low}, max_pixels={high} is invalid: need 0 < min_pixels <= max_pixels"
            )
        return replace(self, min_pixels=low, max_pixels=high)

    def __call__(
        self,
        videos: torch.Tensor | Sequence[torch.Tensor],
        quantize: bool = False,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        per_frame: bool = False,
    ) -> BatchFeature:
        """Videos (one ``(T, C, H, W)`` tensor or a list) -> ``pixel_values_videos`` (all patches concatenated, in
        video order) and ``video_grid_thw`` ``(num_videos, 3)``, as the official processor returns them.
        ``min_pixels`` / ``max_pixels`` override the configured budget for this call; with ``per_frame=True`` they
        bound each frame's area whatever the family (Qwen3-VL's native budget covers all frames of a video)."""
        if isinstance(videos, torch.Tensor) and videos.ndim == 4:
            videos = [videos]
        if isinstance(videos, torch.Tensor) or not isinstance(videos, Sequence) or len(videos) == 0:
            raise PreprocessingError(
                "videos must be a (T, C, H, W) tensor or a non-empty list of them, got "
                f"{tuple(videos.shape) if isinstance(videos, torch.Tensor) else type(videos).__name__}"
            )
        processor = self.with_budget(min_pixels, max_pixels)
        patches, grids = [], []
        for index, frames in enumerate(videos):
            if per_frame and FAMILIES[self.family].budget_over_frames and isinstance(frames, torch.Tensor):
                low, high = self.frame_budget(frames.shape[0], min_pixels, max_pixels)
                processor = self.with_budget(low, high)
            flat, grid = processor.preprocess_video(frames, quantize=quantize, index=index)
            patches.append(flat)
            grids.append(list(grid))
        return BatchFeature(
            {
                "pixel_values_videos": torch.cat(patches, dim=0),
                "video_grid_thw": torch.tensor(grids, dtype=torch.long),
            }
        )


def read_config_json(path: Path) -> dict[str, Any]:
    """Read a JSON object from a config file, raising :class:`ConfigError` naming the file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: cannot read JSON ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
