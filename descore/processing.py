"""Qwen-VL processor for (text, videos) -> model inputs, without torchvision.

Pairs a Hugging Face tokenizer with :class:`descore.video_processing.QwenVideoProcessor` and expands each
``<|video_pad|>`` in the text exactly as transformers' processors do:

* Qwen3-VL (``Qwen3VLProcessor``): one group per temporal patch,
  ``<{t:.1f} seconds><|vision_start|><|video_pad|>*n<|vision_end|>``, with ``t`` the mean time of the patch's frames;
* Qwen2-VL / Qwen2.5-VL (``Qwen2VLProcessor`` / ``Qwen2_5_VLProcessor``): ``<|video_pad|>`` repeated ``t*h*w/merge^2``
  times; Qwen2.5-VL also returns ``second_per_grid_ts`` (temporal_patch_size / fps of the sampled frames).

Frames are taken as sampled (see ``descore.video_io``): the processor never drops or resamples frames.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, BatchFeature, PreTrainedTokenizerBase

from descore.errors import CheckpointError, ConfigError, PreprocessingError
from descore.video_processing import (
    FAMILY_BY_PROCESSOR_CLASS,
    IMAGE_PROCESSOR_NAME,
    PROCESSOR_NAME,
    VIDEO_PROCESSOR_NAME,
    QwenVideoProcessor,
    num_llm_tokens,
    read_config_json,
    temporal_patch_timestamps,
)

logger = logging.getLogger(__name__)

# variant -> official processor class
PROCESSOR_CLASSES = {
    "qwen3_vl": "Qwen3VLProcessor",
    "qwen2_5_vl": "Qwen2_5_VLProcessor",
    "qwen2_vl": "Qwen2VLProcessor",
}
_VARIANT_BY_CLASS = {
    "Qwen3VLProcessor": "qwen3_vl",
    "Qwen2_5_VLProcessor": "qwen2_5_vl",
    "Qwen2VLProcessor": "qwen2_vl",
}
_VARIANT_BY_MODEL_TYPE = {
    "qwen3_vl": "qwen3_vl",
    "qwen3_vl_moe": "qwen3_vl",
    "qwen2_5_vl": "qwen2_5_vl",
    "qwen2_vl": "qwen2_vl",
}
DEFAULT_FPS = 24.0  # what the official processors assume when a video comes without fps


class QwenVLProcessor:
    """Tokenizer + :class:`QwenVideoProcessor` -> ``input_ids``, ``attention_mask``, ``mm_token_type_ids``,
    ``pixel_values_videos``, ``video_grid_thw`` (+ ``second_per_grid_ts`` for Qwen2.5-VL).

    ``variant`` is ``"qwen3_vl"``, ``"qwen2_5_vl"`` or ``"qwen2_vl"`` (default: from the video processor family).
    ``image_processor_config`` is only carried so that :meth:`save_pretrained` writes a folder the official
    processor loads; images are not processed here.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        video_processor: QwenVideoProcessor,
        variant: str | None = None,
        chat_template: str | None = None,
        image_processor_config: dict[str, Any] | None = None,
    ) -> None:
        variant = variant or ("qwen3_vl" if video_processor.family == "qwen3_vl" else "qwen2_5_vl")
        if variant not in PROCESSOR_CLASSES:
            raise ConfigError(
                f"processor variant {variant!r} is unknown: expected one of {sorted(PROCESSOR_CLASSES)}"
            )
        expected_family = FAMILY_BY_PROCESSOR_CLASS[PROCESSOR_CLASSES[variant]]
        if video_processor.family != expected_family:
            raise ConfigError(
                f"processor variant {variant!r} needs a {expected_family!r} video processor, "
                f"got {video_processor.family!r}"
            )
        self.tokenizer = tokenizer
        self.video_processor = video_processor
        self.variant = variant
        self.chat_template = (
            chat_template if chat_template is not None else getattr(tokenizer, "chat_template", None)
        )
        self.image_processor_config = image_processor_config
        vocab = tokenizer.get_vocab()

        def token_id(attribute: str, default: str, required: bool) -> tuple[str, int | None]:
            token = getattr(tokenizer, attribute, None) or default
            if token not in vocab:
                if required:
                    raise ConfigError(
                        f"tokenizer has no {token!r} token ({attribute}): a Qwen-VL tokenizer with its special "
                        "tokens is needed"
                    )
                return token, None
            return token, tokenizer.convert_tokens_to_ids(token)

        self.video_token, self.video_token_id = token_id("video_token", "<|video_pad|>", True)
        self.image_token, self.image_token_id = token_id("image_token", "<|image_pad|>", False)
        needs_frame_groups = variant == "qwen3_vl"
        self.vision_start_token, self.vision_start_token_id = token_id(
            "vision_start_token", "<|vision_start|>", needs_frame_groups
        )
        self.vision_end_token, self.vision_end_token_id = token_id(
            "vision_end_token", "<|vision_end|>", needs_frame_groups
        )

    # ----------------------------------------------------------------- files
    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> QwenVLProcessor:
        """Load tokenizer (``AutoTokenizer``, local files only) and video processor config from a checkpoint folder,
        either the official v5 layout (``processor_config.json``) or the hub layout (``video_preprocessor_config.json``
        / ``preprocessor_config.json``)."""
        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(
                f"{directory}: not a directory (expected a Qwen-VL checkpoint or processor folder)"
            )
        video_processor = QwenVideoProcessor.from_pretrained(directory)
        try:
            tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{directory}: cannot load the tokenizer ({err})") from None
        configs = {
            name: read_config_json(directory / name) for name in _CONFIG_FILES if (directory / name).is_file()
        }
        return cls(
            tokenizer,
            video_processor,
            variant=_variant_of(directory, configs, video_processor),
            chat_template=tokenizer.chat_template or _read_chat_template(directory),
            image_processor_config=_image_processor_config(configs),
        )

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write the tokenizer files, ``chat_template.jinja`` and the official nested ``processor_config.json``
        (what transformers 5's ``Qwen*Processor.save_pretrained`` writes); returns the folder."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory)
        template_path = directory / "chat_template.jinja"
        if self.chat_template and not template_path.is_file():
            template_path.write_text(self.chat_template)
        config = {
            "image_processor": self.image_processor_config or self._default_image_processor_config(),
            "processor_class": PROCESSOR_CLASSES[self.variant],
            "video_processor": self.video_processor.to_dict(),
        }
        (directory / PROCESSOR_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        return directory

    def _default_image_processor_config(self) -> dict[str, Any]:
        vp = self.video_processor
        return {
            "image_mean": list(vp.image_mean),
            "image_processor_type": "Qwen2VLImageProcessor",
            "image_std": list(vp.image_std),
            "merge_size": vp.merge_size,
            "patch_size": vp.patch_size,
            "temporal_patch_size": vp.temporal_patch_size,
        }

    # ----------------------------------------------------------------- text
    def apply_chat_template(
        self, conversation: list[dict[str, Any]] | list[list[dict[str, Any]]], **kwargs: Any
    ) -> Any:
        """Render a conversation with the tokenizer's chat template (``tokenize=False`` unless asked): the result,
        with one ``<|video_pad|>`` per video, is what :meth:`__call__` takes as ``text``."""
        kwargs.setdefault("tokenize", False)
        kwargs.setdefault("chat_template", self.chat_template)
        return self.tokenizer.apply_chat_template(conversation, **kwargs)

    def video_placeholder(
        self, grid_thw: Sequence[int] | torch.Tensor, timestamps: Sequence[float] | None = None
    ) -> str:
        """The text one ``<|video_pad|>`` expands to for a video of this grid (Qwen3-VL needs its frame times)."""
        merge = self.video_processor.merge_size
        if self.variant != "qwen3_vl":
            return self.video_token * num_llm_tokens(grid_thw, merge)
        grid_t, grid_h, grid_w = (int(g) for g in grid_thw)
        if timestamps is None:
            raise PreprocessingError("Qwen3-VL video placeholders need the frame timestamps (seconds)")
        patch_times = temporal_patch_timestamps(timestamps, self.video_processor.temporal_patch_size)
        if len(patch_times) != grid_t:
            raise PreprocessingError(
                f"{len(timestamps)} timestamps give {len(patch_times)} temporal patches but the grid has {grid_t}"
            )
        group = (
            self.vision_start_token + self.video_token * (grid_h * grid_w // merge**2) + self.vision_end_token
        )
        return "".join(f"<{t:.1f} seconds>{group}" for t in patch_times)

    # ----------------------------------------------------------------- call
    def __call__(
        self,
        text: str | Sequence[str],
        videos: torch.Tensor | Sequence[torch.Tensor] | None = None,
        video_timestamps: Sequence[Sequence[float]] | None = None,
        video_fps: float | Sequence[float] | None = None,
        *,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        per_frame_budget: bool = False,
        padding: bool | str = True,
        padding_side: str = "left",
        truncation: bool = False,
        max_length: int | None = None,
        return_tensors: str = "pt",
        quantize: bool = False,
    ) -> BatchFeature:
        """Tokenize ``text`` with each ``<|video_pad|>`` expanded for its video (in order across the batch).

        ``videos``: (T, C, H, W) frames, float in [0, 1] (differentiable) or uint8, already sampled.
        ``video_timestamps``: per video, each frame's time in seconds (Qwen3-VL text; Qwen2.5-VL fps if no fps);
        all-NaN timestamps (unknown source rate) count as missing.
        ``video_fps``: frame rate of the sampled frames (one value or one per video); Qwen3-VL times are then
        ``i / fps``. Without either, 24 fps is assumed as the official processors do (with a warning).
        ``min_pixels`` / ``max_pixels``: override the video processor's pixel budget for this call
        (``per_frame_budget=True``: they bound each frame, whatever the family's native budget).
        ``quantize``: see :meth:`QwenVideoProcessor.preprocess_video`.
        """
        if return_tensors != "pt":
            raise PreprocessingError(f"return_tensors={return_tensors!r} is not supported: only 'pt'")
        texts = [text] if isinstance(text, str) else list(text)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise PreprocessingError("text must be a string or a non-empty list of strings")
        if isinstance(videos, torch.Tensor) and videos.ndim == 4:
            videos = [videos]
        videos = list(videos) if videos is not None else []
        n_video_tokens = sum(t.count(self.video_token) for t in texts)
        if n_video_tokens != len(videos):
            raise PreprocessingError(
                f"text has {n_video_tokens} {self.video_token} placeholder(s) but {len(videos)} video(s) were passed: "
                "put one placeholder per video"
            )
        n_image_tokens = sum(t.count(self.image_token) for t in texts)
        if n_image_tokens:
            raise PreprocessingError(
                f"text has {n_image_tokens} {self.image_token} placeholder(s): images are not supported"
            )

        data: dict[str, Any] = {}
        if videos:
            video_inputs = self.video_processor(
                videos,
                quantize=quantize,
                min_pixels=min_pixels,
                max_pixels=max_pixels,
                per_frame=per_frame_budget,
            )
            timestamps, fps = self._video_times(videos, video_timestamps, video_fps)
            grids = video_inputs["video_grid_thw"]
            replacements = iter(self.video_placeholder(grid, times) for grid, times in zip(grids, timestamps))
            texts = ["".join(_interleave(t.split(self.video_token), replacements)) for t in texts]
            data.update(video_inputs)
            if self.variant == "qwen2_5_vl":
                tp = self.video_processor.temporal_patch_size
                data["second_per_grid_ts"] = torch.tensor([tp / rate for rate in fps], dtype=torch.float32)

        encoded = self.tokenizer(
            texts,
            padding=padding,
            padding_side=padding_side,
            truncation=truncation,
            max_length=max_length,
            return_tensors="pt",
            return_token_type_ids=False,
        )
        input_ids = encoded["input_ids"]
        expected = sum(t.count(self.video_token) for t in texts)
        found = int((input_ids == self.video_token_id).sum())
        if found != expected:
            raise PreprocessingError(
                f"tokenized text holds {found} of the {expected} video tokens: truncation (max_length={max_length}) "
                "cut into a video; raise max_length or shorten the text"
            )
        mm_token_type_ids = torch.zeros_like(input_ids)
        if self.image_token_id is not None:
            mm_token_type_ids[input_ids == self.image_token_id] = 1
        mm_token_type_ids[input_ids == self.video_token_id] = 2
        return BatchFeature({**encoded, "mm_token_type_ids": mm_token_type_ids, **data})

    def _video_times(
        self,
        videos: list[torch.Tensor],
        video_timestamps: Sequence[Sequence[float]] | None,
        video_fps: float | Sequence[float] | None,
    ) -> tuple[list[list[float]], list[float]]:
        """Per video: frame timestamps (seconds) and the sampled frames' fps."""
        count = len(videos)
        if video_timestamps is not None and len(video_timestamps) != count:
            raise PreprocessingError(
                f"video_timestamps has {len(video_timestamps)} entries for {count} video(s)"
            )
        if video_fps is not None and not isinstance(video_fps, (int, float)) and len(video_fps) != count:
            raise PreprocessingError(f"video_fps has {len(video_fps)} entries for {count} video(s)")
        timestamps: list[list[float]] = []
        rates: list[float] = []
        for index, frames in enumerate(videos):
            num_frames = frames.shape[0]
            rate = None
            if video_fps is not None:
                rate = float(video_fps if isinstance(video_fps, (int, float)) else video_fps[index])
                if not (math.isfinite(rate) and rate > 0):
                    raise PreprocessingError(f"video {index}: video_fps={rate} must be a positive number")
            times = None
            if video_timestamps is not None:
                times = [float(t) for t in video_timestamps[index]]
                if times and all(math.isnan(t) for t in times):
                    times = None  # descore.video_io: the source had no known frame rate
            if times is not None:
                if len(times) != num_frames:
                    raise PreprocessingError(
                        f"video {index}: {len(times)} timestamps for {num_frames} frames (need one per frame)"
                    )
                if not all(math.isfinite(t) and t >= 0 for t in times) or any(
                    b < a for a, b in itertools.pairwise(times)
                ):
                    raise PreprocessingError(
                        f"video {index}: timestamps must be finite, non-negative seconds in increasing order"
                    )
                if rate is None and len(times) > 1 and times[-1] > times[0]:
                    rate = (len(times) - 1) / (times[-1] - times[0])
            needs_rate = (self.variant == "qwen3_vl" and times is None) or self.variant == "qwen2_5_vl"
            if rate is None and needs_rate:
                logger.warning(
                    "video %d comes without timestamps or fps: assuming %.0f fps", index, DEFAULT_FPS
                )
            rate = DEFAULT_FPS if rate is None else rate
            if times is None:
                times = [i / rate for i in range(num_frames)]
            timestamps.append(times)
            rates.append(rate)
        return timestamps, rates

    # ----------------------------------------------------------------- helpers
    def num_video_tokens(self, num_frames: int, height: int, width: int) -> int:
        """LLM video tokens (``<|video_pad|>``) for a video of this size."""
        return self.video_processor.num_video_tokens(num_frames, height, width)

    def batch_decode(self, sequences: Any, **kwargs: Any) -> list[str]:
        """Decode generated ids (tokenizer's ``batch_decode``, special tokens skipped unless asked)."""
        kwargs.setdefault("skip_special_tokens", True)
        return self.tokenizer.batch_decode(sequences, **kwargs)


_CONFIG_FILES = (PROCESSOR_NAME, VIDEO_PROCESSOR_NAME, IMAGE_PROCESSOR_NAME, "config.json")


def _interleave(parts: list[str], replacements: Any) -> list[str]:
    out = [parts[0]]
    for part in parts[1:]:
        out += [next(replacements), part]
    return out


def _variant_of(
    directory: Path, configs: dict[str, dict[str, Any]], video_processor: QwenVideoProcessor
) -> str:
    for name in (PROCESSOR_NAME, VIDEO_PROCESSOR_NAME, IMAGE_PROCESSOR_NAME):
        processor_class = configs.get(name, {}).get("processor_class")
        if processor_class in _VARIANT_BY_CLASS:
            return _VARIANT_BY_CLASS[processor_class]
    model_type = configs.get("config.json", {}).get("model_type")
    if model_type in _VARIANT_BY_MODEL_TYPE:
        return _VARIANT_BY_MODEL_TYPE[model_type]
    variant = "qwen3_vl" if video_processor.family == "qwen3_vl" else "qwen2_5_vl"
    logger.warning("%s names no processor_class or model_type: assuming %s", directory, variant)
    return variant


def _image_processor_config(configs: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    nested = configs.get(PROCESSOR_NAME, {})
    if "image_processor" in nested:
        return dict(nested["image_processor"])
    legacy = configs.get(IMAGE_PROCESSOR_NAME)
    if legacy is not None and "image_processor_type" in legacy:
        return {k: v for k, v in legacy.items() if k != "processor_class"}
    return None


def _read_chat_template(directory: Path) -> str | None:
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    legacy = directory / "chat_template.json"
    if legacy.is_file():
        return read_config_json(legacy).get("chat_template")
    return None
