"""Recipe configs: one dataclass per recipe, read strictly from YAML (unknown keys and wrong types are errors).

Every recipe config extends :class:`RecipeConfig`, whose nested sections are ``sampling``
(:class:`~recipes.families.SamplingSpec`), ``lora`` (:class:`~recipes.lora.LoraSpec`) and ``reward``
(:class:`RewardSpec`); the other keys are flat. Each field's help text is in its ``metadata["help"]`` and
``python -m recipes.<name> --help`` prints them. A YAML file may hold one config, or several under named top-level
keys (pick one with ``--example NAME``), as the files in ``recipes/configs`` do.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from descore.errors import ConfigError
from descore.training.config import config_from_dict, describe_fields
from recipes.families import SamplingSpec
from recipes.lora import LoraSpec

C = TypeVar("C")


@dataclass
class RewardSpec:
    """Which reward scores the generated videos (see :mod:`reward_guidance.protocol`)."""

    kind: Literal["descore", "callable"] = field(
        default="descore",
        metadata={
            "help": "'descore': a DeScore checkpoint at `path`; 'callable': the object `factory` names"
        },
    )
    path: str | None = field(default=None, metadata={"help": "DeScore checkpoint folder (kind descore)"})
    mode: Literal["think_free", "think"] = field(
        default="think_free",
        metadata={
            "help": "DeScore mode: think-free (one forward pass, the default) or think (chain of thought first). "
            "The cascade is not a training reward: it scores only its shortlist"
        },
    )
    factory: str | None = field(
        default=None,
        metadata={
            "help": "kind callable: 'module:attribute' of a factory, called with `options`, that returns a "
            "RewardFunction or a callable(videos, prompts)"
        },
    )
    options: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "keyword arguments of `factory`"},
    )
    batch_size: int = field(default=8, metadata={"help": "videos per reward call (micro-batches)"})
    sampling: dict[str, Any] | None = field(
        default=None, metadata={"help": "DeScore frame-sampling overrides (fps, max_frames, ...)"}
    )
    generation: dict[str, Any] | None = field(
        default=None, metadata={"help": "DeScore generation overrides (think mode)"}
    )

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"reward.batch_size: must be >= 1, got {self.batch_size}")
        if self.mode == "cascade":
            raise ConfigError(
                "reward.mode: 'cascade' scores only its top_k videos (the others get no reward), so no recipe can "
                "train on it; use 'think_free' or 'think' (best_of_group with 'think' is RAFT by the full judge)"
            )
        if self.mode not in ("think_free", "think"):
            raise ConfigError(f"reward.mode: expected 'think_free' or 'think', got {self.mode!r}")
        if self.kind == "callable" and not self.factory:
            raise ConfigError("reward.factory: kind 'callable' needs factory: 'module:attribute'")


def build_reward(spec: RewardSpec) -> Any:
    """The :class:`~reward_guidance.protocol.RewardFunction` a spec names."""
    from descore.scoring import DeScore
    from reward_guidance.protocol import as_reward, descore_reward

    if spec.kind == "descore":
        if not spec.path:
            raise ConfigError("reward.path: kind 'descore' needs the DeScore checkpoint folder")
        scorer = DeScore.from_pretrained(spec.path)
        return descore_reward(
            scorer,
            spec.mode,
            batch_size=spec.batch_size,
            sampling=spec.sampling,
            generation=spec.generation,
        )
    module_name, _, attribute = spec.factory.partition(":")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"reward.factory: cannot import {spec.factory!r} ({err})") from err
    if not callable(target):
        raise ConfigError(f"reward.factory: {spec.factory!r} is not callable")
    reward = as_reward(target(**spec.options))
    if reward.batch_size is None:
        reward.batch_size = spec.batch_size
    return reward


def _nested_sections(cls: type) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}


def config_from_mapping(cls: type[C], data: dict[str, Any], where: str) -> C:
    """Build a recipe config from a mapping: nested sections become their dataclasses; everything is checked."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of config keys, got {type(data).__name__}")
    sections = _nested_sections(cls)
    nested = {}
    for name, section_cls in sections.items():
        if name in data:
            nested[name] = config_from_dict(section_cls, data[name] or {}, f"{where} [{name}]")
    config = config_from_dict(cls, {k: v for k, v in data.items() if k not in sections}, where)
    return dataclasses.replace(config, **nested) if nested else config


def _apply_override(data: dict[str, Any], key: str, value: Any) -> None:
    head, _, rest = key.partition(".")
    if not rest:
        data[head] = value
        return
    section = data.setdefault(head, {})
    if not isinstance(section, dict):
        raise ConfigError(f"--set {key}: {head} is not a section")
    _apply_override(section, rest, value)


def load_config(
    cls: type[C],
    path: str | os.PathLike,
    *,
    example: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> C:
    """Read a recipe config from YAML. ``example`` picks one named config of a multi-config file; ``overrides``
    (dotted keys, e.g. ``lora.rank``) win over the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    where = str(path)
    if example is not None:
        if example not in data:
            raise ConfigError(f"{path}: no example {example!r}; the file has {sorted(data)}")
        data, where = data[example], f"{path} [{example}]"
    for key, value in (overrides or {}).items():
        _apply_override(data, key, value)
    return config_from_mapping(cls, data, where)


def config_help(cls: type) -> str:
    """Every field of a recipe config and of its sections, with types, defaults and help."""
    parts = [describe_fields(cls)]
    for name, section_cls in _nested_sections(cls).items():
        parts.append(f"[{name}]\n{describe_fields(section_cls)}")
    return "\n".join(parts)


def config_dict(config: Any) -> dict[str, Any]:
    """A config as plain data (for trackers and checkpoints)."""
    return dataclasses.asdict(config)


@dataclass
class RecipeConfig:
    """Settings every recipe shares: model, prompts, sampling, LoRA, reward, optimisation and bookkeeping."""

    pretrained: str | None = field(
        default=None,
        metadata={
            "help": "folder of a saved diffusers pipeline (DiffusionPipeline.from_pretrained); may be omitted when a pipeline "
            "is passed to the trainer"
        },
    )
    output_dir: str = field(
        default="runs/recipe",
        metadata={"help": "where checkpoints, metrics, sample videos and the final LoRA go"},
    )
    seed: int = field(
        default=0, metadata={"help": "seed of every random choice (prompts, noise, timesteps, LoRA init)"}
    )
    prompts: list[str] = field(
        default_factory=list, metadata={"help": "training prompts (or use prompt_file)"}
    )
    prompt_file: str | None = field(
        default=None, metadata={"help": "text file with one training prompt per line"}
    )
    eval_prompts: list[str] | None = field(
        default=None, metadata={"help": "prompts of the periodic sample videos (None: the first 2)"}
    )
    sampling: SamplingSpec = field(
        default_factory=SamplingSpec, metadata={"help": "sampling size, steps and guidance"}
    )
    lora: LoraSpec = field(default_factory=LoraSpec, metadata={"help": "LoRA adapter settings"})
    reward: RewardSpec = field(default_factory=RewardSpec, metadata={"help": "the reward"})
    num_updates: int = field(
        default=100, metadata={"help": "policy updates (one rollout / sampling round each)"}
    )
    prompts_per_update: int = field(default=4, metadata={"help": "prompts per update per process"})
    group_size: int = field(default=4, metadata={"help": "samples per prompt (GRPO's group)"})
    sample_batch_size: int = field(
        default=4,
        metadata={"help": "samples per rollout call; GRPO recomputes log-probs on these same batches"},
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate"})
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999], metadata={"help": "AdamW betas"})
    adam_eps: float = field(default=1e-8, metadata={"help": "AdamW epsilon"})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm (0: off)"})
    lr_warmup_steps: int = field(
        default=0, metadata={"help": "linear learning-rate warm-up, in optimizer steps"}
    )
    mixed_precision: Literal["no", "fp16", "bf16"] = field(
        default="no",
        metadata={"help": "accelerate mixed precision; frozen weights are cast, LoRA weights stay fp32"},
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "activation checkpointing in the transformer(s)"}
    )
    ema_decay: float | None = field(
        default=None,
        metadata={"help": "EMA of the LoRA weights (None: off); samples and the final LoRA use it"},
    )
    checkpoint_every: int = field(
        default=10, metadata={"help": "updates between checkpoints (0: only at the end)"}
    )
    keep_checkpoints: int | None = field(default=2, metadata={"help": "newest checkpoints kept (None: all)"})
    resume: bool = field(default=True, metadata={"help": "continue from the newest checkpoint in output_dir"})
    sample_every: int = field(default=0, metadata={"help": "updates between sample videos (0: off)"})
    report_to: list[str] = field(
        default_factory=list,
        metadata={"help": "accelerate trackers (tensorboard, wandb, ...); metrics.jsonl is always written"},
    )
    progress: bool = field(default=True, metadata={"help": "show progress bars"})

    def __post_init__(self) -> None:
        for name in ("num_updates", "prompts_per_update", "group_size", "sample_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}: must be a positive integer, got {value!r}")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate: must be positive, got {self.learning_rate}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError(f"ema_decay: must lie in (0, 1), got {self.ema_decay}")
        if len(self.adam_betas) != 2:
            raise ConfigError(f"adam_betas: expected two numbers, got {self.adam_betas}")

    def training_prompts(self) -> list[str]:
        """The prompts from ``prompts`` and ``prompt_file`` (one per non-empty line)."""
        prompts = list(self.prompts)
        if self.prompt_file:
            path = Path(self.prompt_file)
            if not path.is_file():
                raise ConfigError(f"prompt_file: {path} not found")
            prompts += [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not prompts:
            raise ConfigError("prompts: no training prompts (give prompts or prompt_file)")
        return prompts
