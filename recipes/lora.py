"""LoRA on a video pipeline's transformer(s): set-up, the reference policy, and saving in diffusers' LoRA format.

Every recipe trains a LoRA adapter on the denoising transformer (both experts of Wan2.2 unless told otherwise) and
keeps everything else frozen. The reference policy of a KL term or of DPO is the same network with the adapter
switched off (:func:`reference_policy`), so no second copy of the model is held. :func:`save_lora` writes the
adapter with the pipeline class's own ``save_lora_weights`` (PEFT metadata included, so rank and alpha survive) and
a fresh pipeline of the same family loads it with ``pipe.load_lora_weights(directory)``; a Wan2.2 ``transformer_2``
adapter goes to a second file, loaded by :func:`load_lora` (``load_into_transformer_2=True``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from descore.errors import CheckpointError, ConfigError
from recipes.families import family_of

logger = logging.getLogger(__name__)

ADAPTER_NAME = "default"
#: The file the second Wan2.2 expert's adapter is saved to, next to diffusers' default file.
TRANSFORMER_2_WEIGHT_NAME = "pytorch_lora_weights_transformer_2.safetensors"
DEFAULT_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


@dataclass
class LoraSpec:
    """The adapter: rank, alpha, target modules and which transformers carry it.

    Defaults follow Flow-GRPO's Wan2.1 recipe (rank 32, alpha 64, attention projections).
    """

    rank: int = field(default=32, metadata={"help": "LoRA rank (>= 1)."})
    alpha: float = field(default=64.0, metadata={"help": "LoRA alpha; the update is scaled by alpha / rank."})
    target_modules: list[str] = field(
        default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"],
        metadata={
            "help": "Module names (suffixes) that get an adapter; the attention projections of every diffusers video transformer."
        },
    )
    components: list[str] | None = field(
        default=None,
        metadata={
            "help": "Transformers that get the adapter (None: every denoiser, i.e. both Wan2.2 experts)."
        },
    )
    init: str = field(
        default="default",
        metadata={
            "help": "Initial LoRA weights: PEFT's default (B = 0, so training starts at the base model) or 'gaussian'."
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ConfigError(f"lora.rank: must be a positive integer, got {self.rank!r}")
        if self.alpha <= 0:
            raise ConfigError(f"lora.alpha: must be positive, got {self.alpha!r}")
        if not self.target_modules:
            raise ConfigError("lora.target_modules: must name at least one module")
        if self.init not in ("default", "gaussian"):
            raise ConfigError(f"lora.init: expected 'default' or 'gaussian', got {self.init!r}")

    def peft_config(self) -> LoraConfig:
        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            target_modules=list(self.target_modules),
            lora_dropout=0.0,  # dropout would break the exact rollout / recompute equality
            init_lora_weights=True if self.init == "default" else "gaussian",
        )


def lora_components(pipe: DiffusionPipeline, spec: LoraSpec) -> dict[str, torch.nn.Module]:
    """The transformers that get (or have) the adapter, by component name."""
    available = family_of(pipe).denoiser_modules(pipe)
    names = list(available) if spec.components is None else list(spec.components)
    unknown = sorted(set(names) - set(available))
    if unknown:
        raise ConfigError(
            f"lora.components: {type(pipe).__name__} has no transformer(s) {unknown}; has {list(available)}"
        )
    return {name: available[name] for name in names}


def freeze_pipeline(pipe: DiffusionPipeline) -> None:
    """``requires_grad=False`` on every module of the pipeline (VAE parameters default to trainable)."""
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False)


def add_lora(pipe: DiffusionPipeline, spec: LoraSpec, seed: int = 0) -> list[torch.nn.Parameter]:
    """Freeze the pipeline and add the adapter to the chosen transformers; returns the trainable parameters.

    The adapter's initial weights are drawn under a forked CPU RNG seeded with ``seed`` (reproducible runs; peft
    initialises them on the CPU), so neither the caller's CPU stream nor any CUDA generator is touched.
    """
    components = lora_components(pipe, spec)
    freeze_pipeline(pipe)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        for name, module in components.items():
            matched = [
                n for n, _ in module.named_modules() if any(n.endswith(t) for t in spec.target_modules)
            ]
            if not matched:
                raise ConfigError(
                    f"lora.target_modules: none of {spec.target_modules} is a module of {name} "
                    f"({type(module).__name__})"
                )
            module.add_adapter(spec.peft_config(), adapter_name=ADAPTER_NAME)
    params = lora_parameters(pipe)
    logger.info(
        "LoRA r=%d on %s: %d trainable parameters",
        spec.rank,
        list(components),
        sum(p.numel() for p in params),
    )
    return params


def lora_modules(pipe: DiffusionPipeline) -> dict[str, torch.nn.Module]:
    """The transformers that carry an adapter, by component name."""
    return {
        name: module
        for name, module in family_of(pipe).denoiser_modules(pipe).items()
        if getattr(module, "peft_config", None)
    }


def lora_parameters(pipe: DiffusionPipeline) -> list[torch.nn.Parameter]:
    """The adapter's parameters (trainable), in a fixed order: component, then parameter name."""
    params = []
    for _, module in sorted(lora_modules(pipe).items()):
        for name, param in module.named_parameters():
            if "lora_" in name:
                param.requires_grad_(True)
                params.append(param)
    return params


@contextmanager
def reference_policy(pipe: DiffusionPipeline) -> Iterator[None]:
    """Run the base model: the adapter is disabled inside the block and re-enabled after it."""
    modules = list(lora_modules(pipe).values())
    for module in modules:
        module.disable_adapters()
    try:
        yield
    finally:
        for module in modules:
            module.enable_adapters()


def lora_state_dicts(pipe: DiffusionPipeline) -> dict[str, dict[str, torch.Tensor]]:
    """Each adapted transformer's LoRA weights in PEFT's naming, on CPU, by component name."""
    return {
        name: {k: v.detach().to("cpu").contiguous() for k, v in get_peft_model_state_dict(module).items()}
        for name, module in lora_modules(pipe).items()
    }


def save_lora(pipe: DiffusionPipeline, directory: str | Path) -> Path:
    """Write the adapter so that ``pipe.load_lora_weights(directory)`` loads it into a fresh pipeline.

    ``transformer`` goes to diffusers' default file; Wan2.2's ``transformer_2`` to
    :data:`TRANSFORMER_2_WEIGHT_NAME` (load both with :func:`load_lora`).
    """
    directory = Path(directory)
    modules = lora_modules(pipe)
    if not modules:
        raise ConfigError(f"save_lora: {type(pipe).__name__} carries no LoRA adapter")
    states = lora_state_dicts(pipe)
    for name, module in modules.items():
        type(pipe).save_lora_weights(
            directory,
            transformer_lora_layers=states[name],
            weight_name=DEFAULT_WEIGHT_NAME if name == "transformer" else TRANSFORMER_2_WEIGHT_NAME,
            transformer_lora_adapter_metadata=module.peft_config[ADAPTER_NAME].to_dict(),
        )
    return directory


def load_lora(pipe: DiffusionPipeline, directory: str | Path, adapter_name: str | None = None) -> None:
    """Load an adapter written by :func:`save_lora` (both Wan2.2 experts when both were trained)."""
    directory = Path(directory)
    first, second = directory / DEFAULT_WEIGHT_NAME, directory / TRANSFORMER_2_WEIGHT_NAME
    if not first.is_file() and not second.is_file():
        raise CheckpointError(
            f"{directory}: no LoRA weights ({DEFAULT_WEIGHT_NAME} or {TRANSFORMER_2_WEIGHT_NAME})"
        )
    if first.is_file():
        pipe.load_lora_weights(directory, adapter_name=adapter_name)
    if second.is_file():
        pipe.load_lora_weights(
            directory,
            weight_name=TRANSFORMER_2_WEIGHT_NAME,
            adapter_name=adapter_name,
            load_into_transformer_2=True,
        )
