"""Reading training configs: YAML files whose keys are the fields of a config dataclass, strictly checked.

Each field of a training config dataclass carries its help text in ``field(metadata={"help": ...})``;
:func:`describe_fields` renders them for ``--help``. Values are checked against the field types (a typo'd key, a
string where a number belongs, a value outside a ``Literal`` are errors naming the file and the key); numbers written
the way YAML 1.1 reads as strings (``2e-6``) are accepted.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, Union

import yaml

from descore.errors import ConfigError

if TYPE_CHECKING:
    from typing_extensions import Self

C = TypeVar("C")


def field_help(text: str, required: bool = False) -> dict[str, Any]:
    """The ``metadata`` of a config field: its ``--help`` text and whether it must be set."""
    return {"help": text, "required": required}


def _check_value(name: str, value: Any, kind: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _check_value(name, value, option, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{where}: {name} = {value!r} has the wrong type"
        )
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {name} = {value!r}; expected one of {list(args)}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {name} must be a list, got {type(value).__name__}")
        return (
            [_check_value(f"{name}[{i}]", v, args[0], where) for i, v in enumerate(value)]
            if args
            else list(value)
        )
    if origin is dict or kind is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {name} must be a mapping, got {type(value).__name__}")
        return dict(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {name} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {name} must be an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where}: {name} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {name} must be a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {name} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: {name}: unsupported field type {kind!r}")


def config_from_dict(cls: type[C], data: dict[str, Any], where: str) -> C:
    """Build ``cls`` from a mapping: unknown keys and wrongly typed values raise :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of config keys, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {names}")
    values = {k: _check_value(k, v, hints[k], where) for k, v in data.items()}
    try:
        return cls(**values)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from None


def load_yaml_config(cls: type[C], path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> C:
    """Read a YAML file of ``cls`` fields (``overrides`` win over the file's values)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of config keys at the top level, got {type(data).__name__}"
        )
    data.update(overrides or {})
    return config_from_dict(cls, data, str(path))


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (VALUE read as YAML, so ``0.5``, ``true``, ``[a, b]`` work) -> a dict."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({err})") from None
    return out


def _type_name(kind: Any) -> str:
    text = str(kind).replace("typing.", "")
    return text if not isinstance(kind, type) else kind.__name__


def describe_fields(cls: type) -> str:
    """Two lines per field: ``name (type, default)`` and its help, for ``--help``."""
    hints = typing.get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("required") or (
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ):
            shown = "required"
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            shown = f"default {default!r}"
        lines.append(f"  {f.name} ({_type_name(hints[f.name])}, {shown})")
        lines.append(f"      {f.metadata.get('help', '')}")
    return "\n".join(lines)


class TrainingConfig:
    """Base of the training config dataclasses: YAML / mapping reading, ``to_dict``, validation on construction.

    A subclass sets ``label`` (how errors name the config, e.g. ``"sft config"``) and implements ``validate``, which
    collects its problems and passes them to :meth:`raise_problems`; ``check_rules`` formats ``(field, ok, rule)``
    checks. The checks of the fields every trainer has (``train_file``, ``output_dir``, the LoRA, AdamW, schedule and
    checkpoint settings, ``model_dtype`` / ``mixed_precision``) are here.
    """

    label: ClassVar[str] = "config"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming every problem of the settings."""
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str | None = None) -> Self:
        return config_from_dict(cls, data, where or cls.label)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> Self:
        return load_yaml_config(cls, path, overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def required_problems(self) -> list[str]:
        """``train_file`` and ``output_dir`` must be set."""
        return [f"{name} is required" for name in ("train_file", "output_dir") if not getattr(self, name)]

    def lora_checks(self) -> list[tuple[str, bool, str]]:
        """``lora_alpha``, ``lora_dropout`` and ``lora_target_modules`` (``lora_r`` is the trainer's own)."""
        return [
            ("lora_alpha", self.lora_alpha > 0, "> 0"),
            ("lora_dropout", 0 <= self.lora_dropout < 1, "in [0, 1)"),
            ("lora_target_modules", bool(self.lora_target_modules), "a non-empty list"),
        ]

    def optimizer_checks(self) -> list[tuple[str, bool, str]]:
        """AdamW (but the learning rates), clipping, warmup and run length."""
        return [
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("adam_beta1", 0 <= self.adam_beta1 < 1, "in [0, 1)"),
            ("adam_beta2", 0 <= self.adam_beta2 < 1, "in [0, 1)"),
            ("adam_epsilon", self.adam_epsilon > 0, "> 0"),
            ("max_grad_norm", self.max_grad_norm is None or self.max_grad_norm > 0, "> 0"),
            ("warmup_ratio", 0 <= self.warmup_ratio < 1, "in [0, 1)"),
            ("num_epochs", self.num_epochs > 0, "> 0"),
            ("max_steps", self.max_steps is None or self.max_steps >= 1, ">= 1"),
        ]

    def save_checks(self) -> list[tuple[str, bool, str]]:
        """``save_every`` and ``save_total_limit``."""
        return [
            ("save_every", self.save_every >= 0, ">= 0"),
            ("save_total_limit", self.save_total_limit is None or self.save_total_limit >= 1, ">= 1"),
        ]

    def precision_problems(self) -> list[str]:
        """Frozen weights in half precision need mixed precision: the trainable ones are float32."""
        if self.model_dtype != "float32" and self.mixed_precision == "no":
            return [
                f"model_dtype {self.model_dtype} needs mixed_precision bf16 or fp16 (trainable weights are float32)"
            ]
        return []

    def check_rules(self, checks: list[tuple[str, bool, str]]) -> list[str]:
        """``"<field> must be <rule>, got <value>"`` for every ``(field, ok, rule)`` check that failed."""
        return [f"{name} must be {rule}, got {getattr(self, name)!r}" for name, ok, rule in checks if not ok]

    def raise_problems(self, problems: list[str]) -> None:
        """One :class:`ConfigError` listing ``problems`` after the config's label (nothing if there are none)."""
        if problems:
            raise ConfigError(f"{self.label}: " + "; ".join(problems))
