"""Preference pairs -> model batches for stage-1 training, with every video decoded once.

* :class:`FrameStore` decodes each distinct video once, at the checkpoint's sampling settings (the same code path as
  :meth:`descore.scoring.DeScore.score`), and keeps the sampled frames as uint8 (lossless: decoders produce 8-bit
  frames), in memory or as safetensors files in a cache folder that later runs reuse.
* :class:`PairSchedule` fixes which pairs each optimizer step sees and whether their chains of thought are kept, as a
  pure function of (seed, step): resuming at step ``s`` replays exactly what an uninterrupted run would have done.
* :func:`encode_rows` builds the backbone inputs of a list of (frames, prompt, CoT ids) rows with the inference
  layout of :mod:`descore.inputs`: ``user [video, judge instruction] / assistant [CoT][query token]``.
* :func:`collate_pairs` turns pairs into one batch: rows ``[A_0 .. A_{P-1}, B_0 .. B_{P-1}]`` (both videos of a pair
  share the prompt and the CoT draw), labels, and the targets of the optional language-model loss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from descore.config import DeScoreConfig, SamplingConfig
from descore.errors import DataError, DeScoreError
from descore.inputs import cot_token_ids, encode_inputs
from descore.pairs import PairDataset
from descore.processing import QwenVLProcessor
from descore.video_io import Video

logger = logging.getLogger(__name__)

#: Version of the frame-cache file layout; part of every cache key.
CACHE_VERSION = 1


# ---------------------------------------------------------------------------------------------------- frames
class FrameStore:
    """Sampled frames of every distinct video, decoded once.

    ``load`` is the decoder (``DeScore.load_video``: read, sample at the checkpoint's fps and frame budget, check the
    minimum frame count). Without ``cache_dir`` the frames stay in memory. With it, each video's frames are written
    once as ``<key>.safetensors`` (key: path, size, modification time and sampling settings) and read back when a
    batch needs them, so memory stays flat for large datasets and later runs, or the other processes of a multi-GPU
    run, skip decoding.
    """

    def __init__(self, sampling: SamplingConfig, cache_dir: str | os.PathLike | None = None):
        self.sampling = sampling
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self._memory: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._files: dict[str, Path] = {}

    def __len__(self) -> int:
        return len(self._memory) + len(self._files)

    def __contains__(self, path: object) -> bool:
        return str(path) in self._memory or str(path) in self._files

    def _cache_file(self, cache_dir: Path, path: Path) -> Path:
        stat = path.stat()
        key = json.dumps(
            [CACHE_VERSION, str(path), stat.st_size, stat.st_mtime_ns, asdict(self.sampling)], sort_keys=True
        )
        return cache_dir / f"{hashlib.sha1(key.encode()).hexdigest()}.safetensors"

    def add_all(
        self,
        videos: Sequence[Path],
        load: Callable[[str, float | None, SamplingConfig, int], Video],
        *,
        progress: bool = True,
    ) -> None:
        """Decode every video not yet stored; raise one :class:`DataError` listing every video that failed."""
        problems = []
        todo = [Path(v) for v in dict.fromkeys(videos) if v not in self]
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        decoded = 0
        for position, path in enumerate(
            tqdm(todo, desc="decoding videos", unit="video", disable=not progress)
        ):
            cache_file = None if self.cache_dir is None else self._cache_file(self.cache_dir, path)
            if cache_file is not None and cache_file.is_file():
                self._files[str(path)] = cache_file
                continue
            try:
                video: Video = load(str(path), None, self.sampling, position)
            except DeScoreError as err:
                problems.append(str(err))
                continue
            decoded += 1
            frames = (video.frames * 255.0).round_().to(torch.uint8).contiguous()
            timestamps = video.timestamps.to(torch.float64).contiguous()
            if cache_file is None:
                self._memory[str(path)] = (frames, timestamps)
                continue
            partial = cache_file.with_suffix(f".{os.getpid()}.partial")
            save_file(
                {"frames": frames, "timestamps": timestamps}, str(partial), metadata={"source": str(path)}
            )
            os.replace(partial, cache_file)
            self._files[str(path)] = cache_file
        if problems:
            raise DataError("videos", problems)
        logger.info("%d distinct videos ready (%d decoded now)", len(self), decoded)

    def get(self, path: str | os.PathLike) -> Video:
        """The sampled frames of a stored video as a :class:`Video` (float frames in [0, 1], as decoded)."""
        key = str(path)
        if key in self._memory:
            frames, timestamps = self._memory[key]
        elif key in self._files:
            stored = load_file(str(self._files[key]))
            frames, timestamps = stored["frames"], stored["timestamps"]
        else:
            raise DataError(key, ["video was not decoded before training (FrameStore.add_all)"])
        return Video(frames=frames.float().div_(255.0), timestamps=timestamps, source=key)


# ---------------------------------------------------------------------------------------------------- encoding
@dataclass(frozen=True)
class RowSpec:
    """One sequence: a video, the judged prompt and the CoT token ids placed before the query token (may be empty)."""

    video: Video
    prompt: str
    cot_ids: Sequence[int]


def encode_rows(
    processor: QwenVLProcessor, config: DeScoreConfig, query_token_id: int, rows: Sequence[RowSpec]
) -> dict[str, torch.Tensor]:
    """Backbone inputs for ``rows``, left-padded, each ending with ``[CoT][query token]`` (the inference encoder)."""
    return encode_inputs(
        processor,
        config,
        [r.prompt for r in rows],
        [r.video for r in rows],
        [r.cot_ids for r in rows],
        query_token_id=query_token_id,
    )


# ---------------------------------------------------------------------------------------------------- pairs
@dataclass(frozen=True)
class TrainingPair:
    """A pair ready for batching: videos, prompt, the label (+1 A, -1 B, 0 tie) and each CoT as token ids."""

    video_a: Path
    video_b: Path
    prompt: str
    label: int
    cot_a: tuple[int, ...]
    cot_b: tuple[int, ...]
    line: int


def tokenize_pairs(
    pairs: PairDataset,
    dimension: str,
    tokenizer: Any,
    query_token: str,
    *,
    with_cot: bool,
    max_cot_tokens: int | None = None,
) -> list[TrainingPair]:
    """Labels for ``dimension`` and CoT token ids (tokenised once; truncated to ``max_cot_tokens`` if set)."""
    out, truncated = [], 0
    for pair in pairs:
        cots = []
        for text in (pair.cot_a, pair.cot_b) if with_cot else ("", ""):
            ids = tuple(cot_token_ids(tokenizer, text or "", query_token))
            if max_cot_tokens is not None and len(ids) > max_cot_tokens:
                ids, truncated = ids[:max_cot_tokens], truncated + 1
            cots.append(ids)
        out.append(
            TrainingPair(
                pair.video_a,
                pair.video_b,
                pair.prompt,
                int(pair.labels[dimension]),
                cots[0],
                cots[1],
                pair.line,
            )
        )
    if truncated:
        logger.warning("%d chain(s) of thought cut to max_cot_tokens=%d", truncated, max_cot_tokens)
    return out


@dataclass
class PairBatch:
    """Model inputs for ``2P`` rows (all A videos, then all B videos), the pair labels and LM-loss targets.

    ``lm_rows`` / ``lm_cols`` are the positions whose next-token logits predict ``lm_targets``: every CoT token of
    a row whose CoT was kept, then the end-of-turn token after it (what the model must emit to stop thinking).
    """

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    lm_rows: torch.Tensor
    lm_cols: torch.Tensor
    lm_targets: torch.Tensor
    num_pairs: int
    cot_kept: int

    def to(self, device: torch.device | str) -> PairBatch:
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.inputs.items()}
        return PairBatch(
            moved,
            self.labels.to(device),
            self.lm_rows.to(device),
            self.lm_cols.to(device),
            self.lm_targets.to(device),
            self.num_pairs,
            self.cot_kept,
        )

    @property
    def num_tokens(self) -> int:
        return int(self.inputs["attention_mask"].sum())


def collate_pairs(
    pairs: Sequence[TrainingPair],
    keep_cot: Sequence[bool],
    frames: FrameStore,
    processor: QwenVLProcessor,
    config: DeScoreConfig,
    query_token_id: int,
    end_of_turn_id: int,
) -> PairBatch:
    """One batch of pairs; ``keep_cot[i]`` keeps (True) or drops (False) the CoT of BOTH videos of pair ``i``."""
    if len(pairs) != len(keep_cot):
        raise ValueError(f"{len(pairs)} pairs but {len(keep_cot)} CoT draws")
    rows: list[RowSpec] = []
    for side in ("a", "b"):
        for pair, keep in zip(pairs, keep_cot):
            cot = getattr(pair, f"cot_{side}") if keep else ()
            rows.append(RowSpec(frames.get(getattr(pair, f"video_{side}")), pair.prompt, cot))
    inputs = encode_rows(processor, config, query_token_id, rows)
    length = inputs["input_ids"].shape[1]
    lm_rows, lm_cols, lm_targets = [], [], []
    for r, row in enumerate(rows):
        count = len(row.cot_ids)
        if not count:
            continue
        first = length - count - 2  # the token before the CoT predicts its first token
        lm_rows += [r] * (count + 1)
        lm_cols += range(first, first + count + 1)
        lm_targets += [*row.cot_ids, end_of_turn_id]
    long = {"dtype": torch.long}
    return PairBatch(
        inputs=inputs,
        labels=torch.tensor([p.label for p in pairs], **long),
        lm_rows=torch.tensor(lm_rows, **long),
        lm_cols=torch.tensor(lm_cols, **long),
        lm_targets=torch.tensor(lm_targets, **long),
        num_pairs=len(pairs),
        cot_kept=int(sum(bool(k) for k in keep_cot)),
    )


# ---------------------------------------------------------------------------------------------------- order
@dataclass(frozen=True)
class PairSchedule:
    """Which pairs every optimizer step trains on, and which keep their CoT; a pure function of (seed, step).

    The pair stream is the concatenation of one seeded permutation of the data per epoch; step ``s`` takes stream
    positions ``[s * G, (s + 1) * G)`` with ``G = pairs_per_step``. Process ``rank`` of ``world_size`` takes its
    contiguous share of those, split into ``accumulation`` micro-batches. The CoT of each pair is kept with
    probability ``1 - cot_mask_prob``, one draw per pair (both videos), from a generator seeded by (seed, step).
    """

    num_pairs: int
    micro_batch: int
    accumulation: int
    world_size: int
    seed: int
    cot_mask_prob: float

    @property
    def pairs_per_step(self) -> int:
        return self.micro_batch * self.accumulation * self.world_size

    def steps_for_epochs(self, epochs: float) -> int:
        return max(1, math.ceil(epochs * self.num_pairs / self.pairs_per_step))

    def epoch_of(self, step: int) -> float:
        """Epochs completed after ``step`` optimizer steps."""
        return step * self.pairs_per_step / self.num_pairs

    def _stream(self, start: int, count: int) -> np.ndarray:
        out = np.empty(count, dtype=np.int64)
        for k in range(count):
            epoch, offset = divmod(start + k, self.num_pairs)
            if k == 0 or offset == 0:
                order = np.random.default_rng([self.seed, epoch]).permutation(self.num_pairs)
            out[k] = order[offset]
        return out

    def step_plan(self, step: int, rank: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
        """``accumulation`` micro-batches ``(pair indices, keep-CoT flags)`` for ``rank`` at optimizer step ``step``."""
        size = self.pairs_per_step
        indices = self._stream(step * size, size)
        keep = np.random.default_rng([self.seed, 1_000_003, step]).random(size) >= self.cot_mask_prob
        share = self.micro_batch * self.accumulation
        mine = slice(rank * share, (rank + 1) * share)
        indices, keep = indices[mine], keep[mine]
        return [
            (indices[m : m + self.micro_batch], keep[m : m + self.micro_batch])
            for m in range(0, share, self.micro_batch)
        ]
