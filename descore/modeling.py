"""`DeScoreModel`: a Qwen-VL backbone, a learnable query token and a regression head on its final hidden state.

A DeScore checkpoint directory is a complete Qwen-VL checkpoint (``config.json``, safetensors weights, tokenizer and
video processor files, with the query token already in the vocabulary) plus two files of our own:
``descore_config.json`` (:class:`~descore.config.DeScoreConfig`) and ``score_head.safetensors``. Loading is strict:
a missing, unexpected or mismatched tensor is an error, never a silently re-initialised weight, and nothing is
ever unpickled.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from descore.config import SUPPORTED_FAMILIES, DeScoreConfig
from descore.errors import CheckpointError

logger = logging.getLogger(__name__)

HEAD_WEIGHTS_NAME = "score_head.safetensors"
HEAD_KEY = "score_head.weight"


@dataclass
class DeScoreModelOutput:
    """Rewards for each input row (one column per head dimension), the hidden states they were read from, and the
    backbone's final hidden states (for losses on other positions, e.g. a language-model loss on the CoT)."""

    rewards: torch.Tensor
    query_hidden_states: torch.Tensor
    last_hidden_state: torch.Tensor


def backbone_family(backbone: nn.Module) -> str:
    """The DeScore family name of a transformers Qwen-VL model, from its config's model_type."""
    model_type = getattr(getattr(backbone, "config", None), "model_type", None)
    if model_type not in SUPPORTED_FAMILIES:
        raise CheckpointError(
            f"unsupported backbone model_type {model_type!r}; DeScore supports {list(SUPPORTED_FAMILIES)}"
        )
    return model_type


def text_hidden_size(backbone: nn.Module) -> int:
    config = backbone.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text_config.hidden_size)


def load_backbone(path: str | os.PathLike, **load_kwargs: Any) -> nn.Module:
    """Load a Qwen-VL ``...ForConditionalGeneration`` strictly from safetensors."""
    from transformers import AutoModelForImageTextToText

    load_kwargs.setdefault("trust_remote_code", False)
    try:
        model, info = AutoModelForImageTextToText.from_pretrained(
            path, output_loading_info=True, use_safetensors=True, **load_kwargs
        )
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot load the backbone ({err})") from err
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: backbone weights do not match config.json (a tensor has the wrong shape, e.g. a different "
            f"hidden size): {str(err).splitlines()[0]}"
        ) from err
    problems = []
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = sorted(str(k) for k in info.get(kind, ()))
        if keys:
            shown = ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")
            problems.append(f"{kind.replace('_', ' ')}: {shown}")
    problems += list(info.get("error_msgs", ()))
    if problems:
        raise CheckpointError(
            f"{path}: backbone checkpoint does not match its config; " + "; ".join(problems)
        )
    return model


class DeScoreModel(nn.Module):
    """Backbone + query token + head. ``forward`` returns the head's output at the query token of every row."""

    def __init__(self, config: DeScoreConfig, backbone: nn.Module, query_token_id: int):
        super().__init__()
        family = backbone_family(backbone)
        if family != config.family:
            raise CheckpointError(f"config.family is {config.family!r} but the backbone is {family!r}")
        hidden = text_hidden_size(backbone)
        if hidden != config.hidden_size:
            raise CheckpointError(
                f"config.hidden_size is {config.hidden_size} but the backbone's hidden size is {hidden}"
            )
        num_embeddings = backbone.get_input_embeddings().num_embeddings
        if not 0 <= query_token_id < num_embeddings:
            raise CheckpointError(
                f"query token id {query_token_id} has no embedding row (the embedding has {num_embeddings} rows)"
            )
        self.config = config
        self.backbone = backbone
        self.query_token_id = int(query_token_id)
        self.score_head = nn.Linear(hidden, len(config.dimensions), bias=False, dtype=torch.float32)

    # ------------------------------------------------------------------ construction and checkpoints
    @classmethod
    def from_backbone(
        cls,
        base_model: nn.Module,
        tokenizer: Any,
        *,
        seed: int | None = None,
        **config: Any,
    ) -> DeScoreModel:
        """Turn a base Qwen-VL model into a new (untrained) DeScore model; ``config`` sets DeScoreConfig fields.

        Adds the query token to ``tokenizer`` (in place) and gives it an embedding row initialised to the mean of the
        existing rows; the head is initialised with std 1/sqrt(hidden), from ``seed`` when given (else from the
        global torch RNG).
        """
        backbone = base_model
        fields = dict(config)
        fields.setdefault("backbone", getattr(backbone.config, "_name_or_path", "") or "unknown")
        fields["family"] = backbone_family(backbone)
        fields["hidden_size"] = text_hidden_size(backbone)
        config = DeScoreConfig.from_dict(fields)

        tokenizer.add_special_tokens(
            {"extra_special_tokens": [config.query_token]}, replace_extra_special_tokens=False
        )
        query_id = tokenizer.convert_tokens_to_ids(config.query_token)
        embeddings = backbone.get_input_embeddings()
        if query_id >= embeddings.num_embeddings:
            backbone.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            embeddings = backbone.get_input_embeddings()
        with torch.no_grad():
            embeddings.weight[query_id] = (
                embeddings.weight[:query_id].float().mean(0).to(embeddings.weight.dtype)
            )
        model = cls(config, backbone, query_id)
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        with torch.no_grad():
            model.score_head.weight.normal_(0.0, config.hidden_size**-0.5, generator=generator)
        return model

    def save_pretrained(self, directory: str | os.PathLike, *, max_shard_size: str = "5GB") -> Path:
        """Write the backbone (safetensors), ``descore_config.json`` and ``score_head.safetensors``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(directory, safe_serialization=True, max_shard_size=max_shard_size)
        self.config.save(directory)
        save_file(
            {HEAD_KEY: self.score_head.weight.detach().to("cpu", torch.float32).contiguous()},
            str(directory / HEAD_WEIGHTS_NAME),
            metadata={"format": "pt", "dimensions": ",".join(self.config.dimensions)},
        )
        return directory

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, *, query_token_id: int, **load_kwargs: Any
    ) -> DeScoreModel:
        """Load a DeScore checkpoint strictly. ``query_token_id`` comes from the checkpoint's tokenizer.

        ``load_kwargs`` go to the backbone's ``from_pretrained`` (``dtype``, ``device_map``, ``attn_implementation``).
        """
        directory = Path(directory)
        config = DeScoreConfig.load(directory)
        head_path = directory / HEAD_WEIGHTS_NAME
        if not head_path.is_file():
            raise CheckpointError(
                f"{directory}: {HEAD_WEIGHTS_NAME} is missing: this is not a DeScore checkpoint (or it was written "
                "without its regression head); refusing to start from a random head"
            )
        head_state = load_file(str(head_path))
        if set(head_state) != {HEAD_KEY}:
            raise CheckpointError(
                f"{head_path}: expected exactly the tensor {HEAD_KEY!r}, found {sorted(head_state)}"
            )
        weight = head_state[HEAD_KEY]
        expected = (len(config.dimensions), config.hidden_size)
        if tuple(weight.shape) != expected:
            raise CheckpointError(
                f"{head_path}: head weight has shape {tuple(weight.shape)}, expected {expected} "
                f"(dimensions {config.dimensions}, hidden size {config.hidden_size})"
            )
        backbone = load_backbone(directory, **load_kwargs)
        model = cls(config, backbone.eval(), query_token_id)
        with torch.no_grad():
            model.score_head.weight.copy_(weight)
        model.score_head.to(next(backbone.parameters()).device)
        return model

    # ------------------------------------------------------------------ forward
    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def head(self, query_hidden_states: torch.Tensor) -> torch.Tensor:
        """Apply the head in fp32 (rewards are compared by differences: keep their precision)."""
        return self.score_head(query_hidden_states.to(self.score_head.weight.dtype))

    def query_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(row, column) of the query token in each row; exactly one per row is required."""
        hits = input_ids == self.query_token_id
        counts = hits.sum(-1)
        if (counts != 1).any():
            bad = [(i, int(c)) for i, c in enumerate(counts.tolist()) if c != 1]
            raise ValueError(f"each row needs exactly one query token; (row, count) violating: {bad}")
        return hits.nonzero()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **inputs: Any):
        """Run the backbone's base model on a full sequence and read the head at the query token."""
        inputs.setdefault("use_cache", False)
        outputs = self.backbone.model(input_ids=input_ids, attention_mask=attention_mask, **inputs)
        rows, cols = self.query_positions(input_ids).unbind(-1)
        hidden = outputs.last_hidden_state[rows, cols]
        return DeScoreModelOutput(
            rewards=self.head(hidden), query_hidden_states=hidden, last_hidden_state=outputs.last_hidden_state
        )
