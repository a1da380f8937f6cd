"""`DeScore`: load a reward model once, then score videos against prompts in any mode.

Modes:
- think (default): the backbone writes its chain of thought (batched, left-padded, greedy by default); the query
  token is then appended to the generation's KV cache with the right multimodal rotary positions, so the score costs
  one extra decode step, not a second prefill of video + prompt + CoT.
- think-free (``think=False``): prompt + video + query token in one forward pass.
- given CoT (``cots=[...]``): score with chains of thought supplied as text or token ids.
- differentiable (``differentiable=True``): frames in [0, 1] that require grad -> rewards with the graph intact
  (think-free or given CoT). Every other mode runs under ``torch.inference_mode()``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from descore.answer import JudgeAnswer, parse_answer
from descore.config import DeScoreConfig, SamplingConfig
from descore.errors import ConfigError, DeScoreError, VideoError
from descore.inputs import cot_token_ids, encode_inputs
from descore.modeling import DeScoreModel
from descore.processing import QwenVLProcessor
from descore.video_io import Video, load_video

logger = logging.getLogger(__name__)

VideoInput = Any  # a path, or in-memory frames in any layout descore.video_io accepts


@dataclass
class ScoreOutput:
    """Rewards and rationales, in the order of the inputs."""

    rewards: torch.Tensor
    """Reward per video, shape [B] (the first head dimension, normalised if the checkpoint says so)."""
    rewards_by_dimension: dict[str, torch.Tensor]
    """Every head output by name, each of shape [B]."""
    cots: list[str | None]
    """Chain of thought per video (generated or given); None in think-free mode."""
    cot_token_ids: list[list[int] | None]
    """The CoT's token ids (what was actually scored; pass them back as ``cots=`` to rescore exactly)."""
    answers: list[JudgeAnswer | None]
    """Parsed answer block of each CoT (sub-scores and the written overall score); None when absent or malformed."""
    sampling: SamplingConfig
    """The sampling settings actually used."""
    frame_timestamps: list[list[float]] = field(default_factory=list)
    """Source timestamps (seconds) of the frames each video was scored on."""

    @property
    def overall_scores(self) -> list[float | None]:
        return [a.overall_score if a is not None else None for a in self.answers]


@dataclass
class Comparison:
    """Result of comparing two videos for one prompt."""

    preferred: str
    """"A", "B" or "tie" (|reward_a - reward_b| <= tie_threshold)."""
    reward_a: float
    reward_b: float
    details: ScoreOutput


@dataclass
class _Item:
    video: Video
    prompt: str
    cot_ids: list[int] | None


class DeScore:
    """A DeScore reward model with its processor, ready to score."""

    def __init__(self, model: DeScoreModel, processor: QwenVLProcessor):
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        if self.tokenizer.convert_tokens_to_ids(model.config.query_token) != model.query_token_id:
            raise DeScoreError("the processor's tokenizer and the model disagree on the query token id")

    @property
    def config(self) -> DeScoreConfig:
        return self.model.config

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **load_kwargs: Any) -> DeScore:
        """Load a DeScore checkpoint directory (strict). ``load_kwargs`` go to the backbone's ``from_pretrained``."""
        from descore.errors import CheckpointError

        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(
                f"{path}: not a directory; a DeScore checkpoint is a folder written by save_pretrained"
            )
        config = DeScoreConfig.load(path)
        processor = QwenVLProcessor.from_pretrained(path)
        query_id = processor.tokenizer.convert_tokens_to_ids(config.query_token)
        if (
            query_id is None
            or query_id == processor.tokenizer.unk_token_id
            or config.query_token not in processor.tokenizer.get_vocab()
        ):
            raise CheckpointError(f"{path}: the tokenizer has no query token {config.query_token!r}")
        model = DeScoreModel.from_pretrained(path, query_token_id=query_id, **load_kwargs)
        return cls(model, processor)

    @classmethod
    def from_backbone(cls, base_model: torch.nn.Module, processor: QwenVLProcessor, **config: Any) -> DeScore:
        """Start a new DeScore model from a base Qwen-VL model and its processor (adds the query token).
        ``config`` sets DeScoreConfig fields."""
        model = DeScoreModel.from_backbone(base_model, processor.tokenizer, **config)
        return cls(model, processor)

    @classmethod
    def from_base_model(
        cls, path: str | os.PathLike, config: dict[str, Any] | None = None, **load_kwargs: Any
    ) -> DeScore:
        """Start a new DeScore model from a base Qwen-VL checkpoint (a local folder or, where a hub is reachable, an
        id such as ``Qwen/Qwen3-VL-8B-Instruct``). The backbone is loaded strictly; ``config`` sets DeScoreConfig
        fields (query token, dimensions, sampling, ...); ``load_kwargs`` go to the backbone's ``from_pretrained``."""
        from descore.modeling import load_backbone

        backbone = load_backbone(path, **load_kwargs)
        processor = QwenVLProcessor.from_pretrained(path)
        return cls.from_backbone(backbone, processor, backbone=str(path), **(config or {}))

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        self.model.save_pretrained(path)
        self.processor.save_pretrained(path)
        return path

    # ------------------------------------------------------------------ public API
    def score(
        self,
        videos: Sequence[VideoInput],
        prompts: str | Sequence[str],
        *,
        think: bool = True,
        cots: Sequence[str | Sequence[int] | None] | None = None,
        differentiable: bool = False,
        batch_size: int = 8,
        video_fps: float | Sequence[float | None] | None = None,
        sampling: dict[str, Any] | None = None,
        generation: dict[str, Any] | None = None,
        progress: bool | None = None,
    ) -> ScoreOutput:
        """Score ``videos`` against ``prompts`` (one prompt per video, or one prompt for all).

        Args:
            videos: paths (mp4, webm, gif, mov, a folder of frames) or in-memory frames ((T, C, H, W) / (T, H, W, C)
                tensors or arrays, uint8 or floats in [0, 1], lists of PIL images).
            prompts: the generation prompt of each video.
            think: generate a chain of thought before scoring (ignored when ``cots`` is given).
            cots: chains of thought to score with (text or token ids), one per video.
            differentiable: keep the autograd graph from the frames to the rewards (needs ``think=False`` or ``cots``).
            batch_size: how many distinct inputs go through the backbone at once.
            video_fps: frame rate of in-memory videos, so they can be resampled to the checkpoint's fps. Without it,
                in-memory frames are taken as already sampled.
            sampling: overrides of the checkpoint's sampling settings (fps, min_frames, max_frames, min_pixels,
                max_pixels). Overriding warns: the model was trained under the checkpoint's settings.
            generation: overrides of the checkpoint's generation defaults, plus any ``generate`` keyword.
            progress: show a progress bar (default: when there is more than one batch).
        """
        videos, prompts, cot_list, fps_list = self._check_arguments(videos, prompts, cots, video_fps)
        if differentiable and think and cots is None:
            raise ValueError(
                "differentiable scoring cannot generate a chain of thought: pass think=False or cots="
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        use_cots = cots is not None
        mode_think = think and not use_cots
        settings = self._sampling(sampling)

        grad_ctx = contextlib.nullcontext() if differentiable else torch.inference_mode()
        with grad_ctx:
            items, index = self._prepare(
                videos, prompts, cot_list, fps_list, settings, dedupe=not differentiable
            )
            batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
            show = progress if progress is not None else len(batches) > 1
            rewards, cot_ids = [], []
            for batch in tqdm(batches, desc="DeScore", disable=not show, unit="batch"):
                if mode_think:
                    r, ids = self._score_thinking(batch, settings, generation or {})
                else:
                    r = self._score_full(batch, settings)
                    ids = [it.cot_ids for it in batch]
                rewards.append(r)
                cot_ids.extend(ids)
            raw = torch.cat(rewards)[torch.tensor(index, device=rewards[0].device)]
        raw = self._normalise(raw)
        has_cot = mode_think or use_cots
        ids_out = [list(cot_ids[i]) if has_cot else None for i in index]
        cots_out = [
            None if ids is None else self.tokenizer.decode(ids, skip_special_tokens=True) for ids in ids_out
        ]
        return ScoreOutput(
            rewards=raw[:, 0],
            rewards_by_dimension={d: raw[:, k] for k, d in enumerate(self.config.dimensions)},
            cots=cots_out,
            cot_token_ids=ids_out,
            answers=[parse_answer(c) if c is not None else None for c in cots_out],
            sampling=settings,
            frame_timestamps=[items[i].video.timestamps.tolist() for i in index],
        )

    def compare(
        self,
        video_a: VideoInput,
        video_b: VideoInput,
        prompt: str,
        *,
        tie_threshold: float = 0.0,
        **score_kwargs: Any,
    ) -> Comparison:
        """Which of two videos better realises ``prompt``: "A", "B", or "tie" when the rewards differ by at most
        ``tie_threshold``."""
        if tie_threshold < 0:
            raise ValueError(f"tie_threshold must be >= 0, got {tie_threshold}")
        out = self.score([video_a, video_b], [prompt, prompt], **score_kwargs)
        a, b = float(out.rewards[0]), float(out.rewards[1])
        preferred = "tie" if abs(a - b) <= tie_threshold else ("A" if a > b else "B")
        return Comparison(preferred=preferred, reward_a=a, reward_b=b, details=out)

    # ------------------------------------------------------------------ preparation
    @staticmethod
    def _check_arguments(videos, prompts, cots, video_fps):
        if isinstance(videos, (str, os.PathLike)) or (isinstance(videos, torch.Tensor) and videos.ndim == 4):
            raise TypeError("videos must be a list (one entry per video), not a single video")
        videos = list(videos)
        if not videos:
            raise ValueError("no videos to score: the video list is empty")
        if isinstance(prompts, str):
            prompts = [prompts] * len(videos)
        prompts = list(prompts)
        if len(prompts) != len(videos):
            raise ValueError(
                f"got {len(videos)} videos but {len(prompts)} prompts; give one prompt per video"
            )
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p.strip():
                raise ValueError(f"prompt {i} must be a non-empty string, got {p!r}")
        cot_list = [None] * len(videos) if cots is None else list(cots)
        if len(cot_list) != len(videos):
            raise ValueError(f"got {len(videos)} videos but {len(cot_list)} chains of thought")
        if cots is not None and any(c is None for c in cot_list):
            raise ValueError("cots= needs a chain of thought for every video (use '' for an empty one)")
        fps_list = list(video_fps) if isinstance(video_fps, (list, tuple)) else [video_fps] * len(videos)
        if len(fps_list) != len(videos):
            raise ValueError(f"got {len(videos)} videos but {len(fps_list)} video_fps values")
        return videos, prompts, cot_list, fps_list

    def _sampling(self, overrides: dict[str, Any] | None) -> SamplingConfig:
        base = self.config.sampling
        if not overrides:
            return base
        known = {f.name for f in dataclasses.fields(SamplingConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown sampling setting(s) {unknown}; allowed: {sorted(known)}")
        changed = {k: v for k, v in overrides.items() if getattr(base, k) != v}
        if changed:
            warnings.warn(
                "overriding the checkpoint's sampling settings "
                + ", ".join(f"{k}: {getattr(base, k)} -> {v}" for k, v in changed.items())
                + "; the model was trained with the checkpoint's settings and scores may shift",
                UserWarning,
                stacklevel=3,
            )
        settings = dataclasses.replace(base, **overrides)
        settings.validate()
        return settings

    def load_video(
        self,
        source: VideoInput,
        fps: float | None = None,
        settings: SamplingConfig | None = None,
        position: int = 0,
    ) -> Video:
        """Read or normalise one video and sample it under ``settings``.

        Files and in-memory videos of known rate (``fps``, or a :class:`Video` with a rate) are resampled to
        the checkpoint's fps; in-memory frames of unknown rate are taken as already sampled at that fps.
        ``position`` labels the video in errors.
        """
        settings = settings or self.config.sampling
        is_path = isinstance(source, (str, os.PathLike))
        name = str(source) if is_path else f"<video {position}>"
        known_rate = (
            is_path or fps is not None or (isinstance(source, Video) and source.source_fps is not None)
        )
        try:
            video = load_video(
                source,
                fps=settings.fps if known_rate else None,
                max_frames=settings.max_frames,
                source_fps=fps if known_rate else settings.fps,
                name=name,
            )
        except DeScoreError as err:
            raise VideoError(f"video {position} ({name}): {err}") from err
        if video.num_frames < settings.min_frames:
            duration = f"{video.duration:.2f} s" if video.duration is not None else "unknown duration"
            raise VideoError(
                f"video {position} ({name}): yields {video.num_frames} frame(s) at {settings.fps} fps ({duration}); "
                f"the checkpoint needs at least {settings.min_frames}. Use a longer video"
                + ("." if known_rate else ", or pass video_fps= so the frames can be resampled.")
            )
        return video

    def _prepare(self, videos, prompts, cots, fps_list, settings, dedupe: bool):
        """Load every video once, build items, and de-duplicate identical (video, prompt, CoT) inputs."""
        loaded: dict[Any, Video] = {}
        items: list[_Item] = []
        keys: dict[Any, int] = {}
        index: list[int] = []
        for i, (source, prompt, cot, fps) in enumerate(zip(videos, prompts, cots, fps_list)):
            video_key = (
                str(Path(source).resolve()) if isinstance(source, (str, os.PathLike)) else id(source),
                fps,
            )
            if video_key not in loaded or not dedupe:
                loaded[video_key] = self.load_video(source, fps, settings, i)
            cot_ids = (
                None
                if cot is None
                else cot_token_ids(self.tokenizer, cot, self.config.query_token, self._eos_ids())
            )
            key = (video_key, prompt, None if cot_ids is None else tuple(cot_ids))
            if dedupe and key in keys:
                index.append(keys[key])
                continue
            keys[key] = len(items)
            index.append(len(items))
            items.append(_Item(loaded[video_key], prompt, cot_ids))
        return items, index

    def _encode(
        self, batch: list[_Item], settings: SamplingConfig, with_query: bool = False
    ) -> dict[str, torch.Tensor]:
        encoded = encode_inputs(
            self.processor,
            self.config,
            [it.prompt for it in batch],
            [it.video for it in batch],
            [it.cot_ids or [] for it in batch] if with_query else None,
            query_token_id=self.model.query_token_id,
            sampling=settings,
        )
        return {k: v.to(self.model.device) if isinstance(v, torch.Tensor) else v for k, v in encoded.items()}

    # ------------------------------------------------------------------ scoring paths
    def _score_full(self, batch: list[_Item], settings: SamplingConfig) -> torch.Tensor:
        """One forward over prompt + video + (CoT) + query token."""
        return self.model(**self._encode(batch, settings, with_query=True)).rewards.float()

    def _score_thinking(
        self, batch: list[_Item], settings: SamplingConfig, generation: dict[str, Any]
    ) -> tuple[torch.Tensor, list[list[int]]]:
        """Generate the CoT, then read the query token through the generation's KV cache (beam search keeps one
        cache row per beam: its chosen CoT is scored with one full forward instead)."""
        gen_kwargs = dataclasses.asdict(self.config.generation)
        gen_kwargs.update(generation)
        if gen_kwargs.get("num_return_sequences", 1) != 1:
            raise ConfigError(
                f"generation num_return_sequences={gen_kwargs['num_return_sequences']}: DeScore scores one chain of "
                "thought per video; to score several, call score() again with do_sample=True, or pass them as cots="
            )
        inputs = self._encode(batch, settings)
        if not gen_kwargs.get("do_sample"):
            gen_kwargs.pop("temperature", None)
            gen_kwargs.pop("top_p", None)
        gen_kwargs.setdefault("eos_token_id", self._eos_ids())
        eos_ids = gen_kwargs["eos_token_id"]
        eos_ids = [eos_ids] if isinstance(eos_ids, int) else list(eos_ids)
        gen_kwargs.setdefault("pad_token_id", self.tokenizer.pad_token_id)
        backbone = self.model.backbone
        out = backbone.generate(**inputs, return_dict_in_generate=True, use_cache=True, **gen_kwargs)
        prompt_len = inputs["input_ids"].shape[1]
        generated = out.sequences[:, prompt_len:]
        gen_mask = _cot_mask(generated, eos_ids)
        cot_ids = [generated[r][gen_mask[r]].tolist() for r in range(len(batch))]
        if gen_kwargs.get("num_beams", 1) > 1:
            chosen = [dataclasses.replace(item, cot_ids=ids) for item, ids in zip(batch, cot_ids)]
            return self._score_full(chosen, settings), cot_ids
        rewards = self.score_from_cache(inputs, out.sequences, gen_mask, out.cache)
        return rewards, cot_ids

    def score_from_cache(
        self,
        prompt_inputs: dict[str, torch.Tensor],
        sequences: torch.Tensor,
        cot_mask: torch.Tensor,
        cache: Any,
    ) -> torch.Tensor:
        """Rewards from a generation cache: feed [last generated token, query token] on top of the cache.

        ``cot_mask`` (B, N) marks which generated tokens belong to each row's CoT (False for EOS and padding after
        it); masked positions are hidden from the query token, so the result equals a full forward over
        prompt + CoT + query token. Positions follow M-RoPE: a text token's position is its index among the attended
        tokens plus the row's rope delta (the shift the video's 3-D positions introduce).
        """
        prompt_mask = prompt_inputs["attention_mask"].bool()
        batch_size = sequences.shape[0]
        query = torch.full(
            (batch_size, 1), self.model.query_token_id, dtype=sequences.dtype, device=sequences.device
        )
        new_tokens = torch.cat([sequences[:, -1:], query], dim=1)
        mask = torch.cat([prompt_mask, cot_mask, torch.ones_like(query, dtype=torch.bool)], dim=1)
        if cache.get_seq_length() != mask.shape[1] - 2:
            raise DeScoreError(
                f"generation cache holds {cache.get_seq_length()} positions, expected {mask.shape[1] - 2}"
            )
        text_pos = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -2:]
        positions = (text_pos + self._rope_deltas(prompt_inputs)).unsqueeze(0).expand(3, -1, -1)
        outputs = self.model.backbone.model(
            input_ids=new_tokens,
            attention_mask=mask.long(),
            position_ids=positions,
            cache=cache,
            use_cache=True,
        )
        return self.model.head(outputs.last_hidden_state[:, -1]).float()

    def _rope_deltas(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-row M-RoPE delta of the prompt (computed here rather than read from the model's mutable state)."""
        kwargs = {k: inputs[k] for k in ("video_grid_thw", "second_per_grid_ts") if k in inputs}
        _, deltas = self.model.backbone.model.get_rope_index(
            inputs["input_ids"],
            mm_token_type_ids=inputs["mm_token_type_ids"],
            attention_mask=inputs["attention_mask"],
            **kwargs,
        )
        return deltas.to(inputs["input_ids"].device)

    def _eos_ids(self) -> list[int]:
        ids = {self.tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")}
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return sorted(i for i in ids if i is not None and i != self.tokenizer.unk_token_id)

    def _normalise(self, raw: torch.Tensor) -> torch.Tensor:
        if self.config.reward_mean is None:
            return raw
        return (raw - self.config.reward_mean) / self.config.reward_std


def _cot_mask(generated: torch.Tensor, eos_ids: Sequence[int]) -> torch.Tensor:
    """True for generated tokens before each row's first EOS (the CoT proper)."""
    is_eos = torch.isin(generated, torch.tensor(list(eos_ids), device=generated.device))
    after_eos = is_eos.long().cumsum(-1) > 0
    return ~after_eos
