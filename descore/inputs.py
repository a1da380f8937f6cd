"""Turning (video, prompt, chain of thought) triples into backbone inputs.

The sequence layout is the same in every mode, so that the scores of all modes agree and training matches inference:

    <|im_start|>user <video> {judge instruction with the prompt}<|im_end|>
    <|im_start|>assistant {chain of thought}{query token}

Think-free scoring uses an empty chain of thought; think-then-score appends the query token to the generation's cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from descore.config import DeScoreConfig, SamplingConfig
from descore.templates import JudgeTemplate, build_messages, get_template, neutralize_control_tokens
from descore.video_io import Video

#: Keys of a processor batch that carry one row per sequence (everything else is per video).
ROW_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids")


def control_tokens(tokenizer: Any, extra: Sequence[str] = ()) -> list[str]:
    """Every string the tokenizer would turn into a special or added token, plus ``extra``."""
    tokens = set(tokenizer.all_special_tokens) | set(getattr(tokenizer, "get_added_vocab", dict)())
    return sorted(tokens | set(extra))


def prompt_texts(
    tokenizer: Any, template: JudgeTemplate, prompts: Sequence[str], extra_control: Sequence[str] = ()
) -> list[str]:
    """The chat-formatted text of each judged prompt, ending with the assistant's generation prompt."""
    controls = control_tokens(tokenizer, extra_control)
    texts = []
    for prompt in prompts:
        messages = build_messages(template, neutralize_control_tokens(prompt, controls))
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return texts


def cot_token_ids(
    tokenizer: Any,
    cot: str | Sequence[int] | torch.Tensor,
    query_token: str,
    end_ids: Sequence[int] = (),
) -> list[int]:
    """Token ids of a chain of thought given as text (neutralised) or as ids (e.g. from vLLM).

    Ids may end with end-of-turn tokens (``end_ids``), which are dropped; they may not contain the query token.
    """
    if isinstance(cot, str):
        text = neutralize_control_tokens(cot, control_tokens(tokenizer, [query_token]))
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    ids = cot.tolist() if isinstance(cot, torch.Tensor) else list(cot)
    if not all(isinstance(i, int) and 0 <= i < len(tokenizer) for i in ids):
        raise ValueError(
            "a chain of thought given as token ids must be a flat sequence of ids in the vocabulary"
        )
    while ids and ids[-1] in end_ids:
        ids.pop()
    if tokenizer.convert_tokens_to_ids(query_token) in ids:
        raise ValueError(f"a chain of thought given as token ids contains the query token {query_token!r}")
    return ids


def append_suffixes(
    batch: dict[str, torch.Tensor], suffixes: Sequence[Sequence[int]], pad_id: int
) -> dict[str, torch.Tensor]:
    """Append per-row token suffixes to a left-padded batch and re-pad it on the left.

    Suffix tokens are text (``mm_token_type_ids`` 0). Per-video tensors (pixels, grids) are passed through.
    """
    ids, mask = batch["input_ids"], batch["attention_mask"]
    types = batch.get("mm_token_type_ids")
    rows = []
    for r, suffix in enumerate(suffixes):
        keep = mask[r].bool()
        suffix_t = torch.tensor(list(suffix), dtype=ids.dtype, device=ids.device)
        row_types = (
            None
            if types is None
            else torch.cat([types[r][keep], torch.zeros_like(suffix_t, dtype=types.dtype)])
        )
        rows.append((torch.cat([ids[r][keep], suffix_t]), row_types))
    length = max(len(r[0]) for r in rows)
    out = dict(batch)
    out["input_ids"] = torch.full((len(rows), length), pad_id, dtype=ids.dtype, device=ids.device)
    out["attention_mask"] = torch.zeros((len(rows), length), dtype=mask.dtype, device=mask.device)
    if types is not None:
        out["mm_token_type_ids"] = torch.zeros((len(rows), length), dtype=types.dtype, device=types.device)
    for r, (row_ids, row_types) in enumerate(rows):
        n = len(row_ids)
        out["input_ids"][r, length - n :] = row_ids
        out["attention_mask"][r, length - n :] = 1
        if row_types is not None:
            out["mm_token_type_ids"][r, length - n :] = row_types
    return out


def encode_inputs(
    processor: Any,
    config: DeScoreConfig,
    prompts: Sequence[str],
    videos: Sequence[Video],
    cots: Sequence[Sequence[int]] | None = None,
    *,
    query_token_id: int | None = None,
    sampling: SamplingConfig | None = None,
) -> dict[str, torch.Tensor]:
    """Backbone inputs for (prompt, video[, CoT]) rows, left-padded: the one encoder of training and every scoring mode.

    Without ``cots`` each row ends with the assistant's generation prompt (input to ``generate``); with ``cots``
    (token ids) each row ends with ``[CoT][query token]``. The pixel budget of ``sampling`` (default: the
    checkpoint's) bounds each frame.
    """
    sampling = sampling or config.sampling
    tokenizer = processor.tokenizer
    texts = prompt_texts(tokenizer, get_template(config.template), prompts, [config.query_token])
    encoded = dict(
        processor(
            text=texts,
            videos=[v.frames for v in videos],
            video_timestamps=[v.timestamps for v in videos],
            min_pixels=sampling.min_pixels,
            max_pixels=sampling.max_pixels,
            per_frame_budget=True,
        )
    )
    if cots is None:
        return encoded
    if query_token_id is None:
        raise ValueError("encode_inputs needs query_token_id to append the query token after the CoTs")
    return append_suffixes(encoded, [list(c) + [query_token_id] for c in cots], tokenizer.pad_token_id)
