"""What reranking and guidance need to know about each supported pipeline class, behind one interface.

A :class:`FamilyAdapter` wraps a pipeline instance and knows:

- its decoder (:mod:`reward_guidance.decoding`) and default frame rate;
- how to batch candidates (``num_videos_per_prompt``, or a repeated prompt for CogVideoX, which ignores it) and how
  many frames a call generates;
- how to turn the transformer's calls of one step into the prediction the scheduler steps on: classifier-free
  guidance as two calls (Wan, HunyuanVideo's true CFG) or one call on a doubled batch (CogVideoX, LTX, with LTX's
  guidance rescale), Wan 2.2's switch to its low-noise expert below ``boundary_ratio``, and the guidance scale in force;
- how to form the clean-sample estimate x0 from that prediction at a given step of the schedule: rectified flow
  ``x0 = x - sigma * v`` (Wan, LTX, HunyuanVideo) or the DDIM formulas on ``alphas_cumprod`` for CogVideoX's
  v-prediction (and epsilon) schedulers.

These conventions are the home of every per-family rule that a hand-written sampling loop shares with guidance
(:mod:`recipes.families` builds its rollouts on them): :func:`classifier_free_guidance` and the ``[uncond, cond]``
layout of a doubled batch (:func:`cfg_batch`, :func:`cfg_halves`), :meth:`FamilyAdapter.denoiser` (which expert and
which scale at a timestep, Wan 2.2's boundary included), :meth:`FamilyAdapter.denoiser_modules`,
:meth:`FamilyAdapter.latent_frames`, and the x0 formulas :func:`flow_x0` and :func:`ddim_x0`.

Register another pipeline class with :func:`register_family`.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from diffusers import CogVideoXPipeline, DiffusionPipeline, HunyuanVideoPipeline, LTXPipeline, WanPipeline
from diffusers.pipelines.ltx.pipeline_ltx import rescale_noise_cfg

from descore.errors import ConfigError
from reward_guidance.decoding import (
    CogVideoXDecoder,
    HunyuanVideoDecoder,
    LatentDecoder,
    LTXDecoder,
    WanDecoder,
)

TransformerCall = tuple[torch.nn.Module, dict[str, Any]]
"""One recorded transformer call: the module and the keyword arguments the pipeline passed."""


def classifier_free_guidance(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """The guided prediction ``uncond + scale * (cond - uncond)``, as every supported pipeline combines its branches."""
    return uncond + scale * (cond - uncond)


def cfg_batch(uncond: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """The doubled batch of batched-CFG pipelines (CogVideoX, LTX): the unconditional half first."""
    return torch.cat([uncond, cond])


def cfg_halves(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(uncond, cond) halves of a call on a :func:`cfg_batch` doubled batch."""
    uncond, cond = output.chunk(2)
    return uncond, cond


def flow_x0(sample: torch.Tensor, velocity: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """Clean-sample estimate of a rectified flow ``x = (1 - sigma) x0 + sigma eps`` from ``v = eps - x0``."""
    return sample - sigma * velocity


def ddim_x0(
    sample: torch.Tensor, prediction: torch.Tensor, alpha: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """Clean-sample estimate of a variance-preserving model at cumulative alpha ``alpha`` (broadcast to ``sample``),
    for the scheduler's ``prediction_type`` (CogVideoX: v-prediction), as DDIM's ``step`` computes it."""
    if prediction_type == "v_prediction":
        return alpha.sqrt() * sample - (1 - alpha).sqrt() * prediction
    if prediction_type == "epsilon":
        return (sample - (1 - alpha).sqrt() * prediction) / alpha.sqrt()
    if prediction_type == "sample":
        return prediction
    raise ConfigError(
        f"prediction_type: unknown {prediction_type!r}; expected 'v_prediction', 'epsilon' or 'sample'"
    )


class FamilyAdapter(ABC):
    """A supported pipeline instance plus its family's conventions (see the module docstring)."""

    pipeline_class: ClassVar[type[DiffusionPipeline]]
    decoder_class: ClassVar[type[LatentDecoder]]
    batched_cfg: ClassVar[bool] = False
    """True when the pipeline runs both CFG branches in one call on a doubled batch ordered [uncond, cond]."""

    def __init__(self, pipe: DiffusionPipeline, **decoder_options: Any):
        if not isinstance(pipe, self.pipeline_class):
            raise ConfigError(
                f"{type(self).__name__} wraps a {self.pipeline_class.__name__}, got {type(pipe).__name__}"
            )
        self.pipe = pipe
        self.decoder = self.decoder_class(pipe, **decoder_options)

    @property
    def family(self) -> str:
        return self.pipeline_class.__name__.removesuffix("Pipeline").lower()

    @property
    def scheduler(self) -> Any:
        return self.pipe.scheduler

    @property
    def vae(self) -> torch.nn.Module:
        return self.pipe.vae

    @property
    def temporal_compression(self) -> int:
        """Pixel frames per latent frame (after the first)."""
        return self.decoder.temporal_compression

    # ------------------------------------------------------------------ generation
    @abstractmethod
    def default_fps(self, call_kwargs: Mapping[str, Any] | None = None) -> float:
        """Frame rate the family's checkpoints generate at (for rewards that resample by time)."""

    def call_default(self, name: str) -> Any:
        """Default of a ``__call__`` argument of the pipeline (e.g. ``num_frames``)."""
        parameter = inspect.signature(type(self.pipe).__call__).parameters.get(name)
        return None if parameter is None else parameter.default

    def requested_frames(self, call_kwargs: Mapping[str, Any]) -> int:
        """``num_frames`` of a call, or the pipeline's default."""
        return int(call_kwargs.get("num_frames") or self.call_default("num_frames"))

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames of a ``num_frames`` video (the first pixel frame has a latent frame of its own)."""
        return (num_frames - 1) // self.temporal_compression + 1

    def generated_frames(self, call_kwargs: Mapping[str, Any]) -> int:
        """Frames a call with ``call_kwargs`` generates: the decode of the latent frames its ``num_frames`` gets."""
        return self.decoder.pixel_frames(self.latent_frames(self.requested_frames(call_kwargs)))

    def batch_kwargs(self, prompt: str, count: int) -> dict[str, Any]:
        """Call arguments that generate ``count`` videos of one prompt in one call (one generator per video)."""
        return {"prompt": prompt, "num_videos_per_prompt": count}

    # ------------------------------------------------------------------ denoising
    def denoiser_modules(self) -> dict[str, torch.nn.Module]:
        """Every denoiser module the pipeline may call, by component name."""
        return {"transformer": self.pipe.transformer}

    def experts(self) -> list[torch.nn.Module]:
        """Every denoiser module the pipeline may call."""
        return list(self.denoiser_modules().values())

    def low_noise(self, timestep: float | torch.Tensor) -> bool:
        """True when the pipeline hands ``timestep`` to its low-noise expert ``transformer_2`` (Wan 2.2)."""
        return False

    def denoiser(
        self,
        timestep: float | torch.Tensor,
        guidance_scale: float | None,
        guidance_scale_2: float | None = None,
    ) -> tuple[torch.nn.Module, float | None]:
        """The denoiser the pipeline calls at ``timestep`` and the CFG scale in force there, for a call with
        ``guidance_scale`` and ``guidance_scale_2`` (the low-noise expert's; None: the same scale)."""
        if not self.low_noise(timestep):
            return self.pipe.transformer, guidance_scale
        return self.pipe.transformer_2, guidance_scale if guidance_scale_2 is None else guidance_scale_2

    def expert_at(self, timestep: float) -> torch.nn.Module:
        """The denoiser the pipeline uses at ``timestep``."""
        return self.denoiser(timestep, None)[0]

    def cfg_scale(self, timestep: float) -> float | None:
        """The classifier-free guidance scale the pipeline applies at ``timestep`` (None: not readable)."""
        low_noise_scale = getattr(self.pipe, "_guidance_scale_2", None)
        return float(self.denoiser(timestep, self.pipe.guidance_scale, low_noise_scale)[1])

    def call_cfg_scale(self, call_kwargs: Mapping[str, Any]) -> float | None:
        """A CFG scale a call sets but the pipeline does not keep (None when :meth:`cfg_scale` can read it)."""
        return None

    def grid(self, calls: list[TransformerCall]) -> tuple[int, int, int] | None:
        """Latent (frames, height, width) for decoders of packed latents; read from the recorded call."""
        return None

    def model_input(
        self, latents: torch.Tensor, recorded: torch.Tensor, timestep: torch.Tensor
    ) -> torch.Tensor:
        """The ``hidden_states`` of a replayed call: the latents, doubled when the recorded call doubled them."""
        copies = recorded.shape[0] // latents.shape[0]
        return torch.cat([latents] * copies).to(recorded.dtype)

    def conditional_calls(self, calls: list[TransformerCall], batch: int) -> list[TransformerCall]:
        """The calls (or halves of a doubled batch) that compute the conditional prediction only."""
        if not self.batched_cfg:
            return calls[:1]
        module, kwargs = calls[0]
        if kwargs["hidden_states"].shape[0] != 2 * batch:
            return calls
        halved = {
            k: v[batch:] if isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape[0] == 2 * batch else v
            for k, v in kwargs.items()
        }
        return [(module, halved)]

    def combine(self, outputs: list[torch.Tensor], batch: int, scale: float | None) -> torch.Tensor:
        """The prediction the scheduler steps on, from the replayed calls' outputs (CFG as the pipeline does it)."""
        if self.batched_cfg:
            if outputs[0].shape[0] == batch:
                return outputs[0]
            uncond, cond = cfg_halves(outputs[0])
        else:
            if len(outputs) == 1:
                return outputs[0]
            cond, uncond = outputs[0], outputs[1]
        if scale is None:
            raise ConfigError(
                f"{type(self.pipe).__name__} ran classifier-free guidance with a scale it does not store: pass "
                "cfg_scale= (the scale you gave the pipeline) or lookahead_cfg=False"
            )
        return classifier_free_guidance(uncond, cond, scale)

    def timestep(self, index: int) -> torch.Tensor:
        """The timestep the pipeline feeds the transformer at step ``index``."""
        return self.scheduler.timesteps[index]

    def is_clean(self, index: int) -> bool:
        """True when the latents entering step ``index`` are the final sample (no noise left to predict)."""
        return index >= len(self.scheduler.timesteps) or float(self.scheduler.sigmas[index]) == 0.0

    def x0(self, latents: torch.Tensor, prediction: torch.Tensor, index: int) -> torch.Tensor:
        """Clean-sample estimate from the prediction at step ``index`` (rectified flow: x - sigma * v)."""
        sigma = self.scheduler.sigmas[index].to(latents.device, torch.float32)
        return flow_x0(latents.float(), prediction.float(), sigma)


class WanAdapter(FamilyAdapter):
    """Wan 2.1 and 2.2 (two experts; the second takes over below ``boundary_ratio * num_train_timesteps``)."""

    pipeline_class = WanPipeline
    decoder_class = WanDecoder

    @property
    def family(self) -> str:
        return "wan2.2" if self._boundary() is not None else "wan2.1"

    def default_fps(self, call_kwargs: Mapping[str, Any] | None = None) -> float:
        # Wan2.1 and Wan2.2-A14B generate at 16 fps, Wan2.2-TI2V-5B (48-channel VAE) at 24 fps.
        return 24.0 if self.vae.config.z_dim == 48 else 16.0

    def generated_frames(self, call_kwargs: Mapping[str, Any]) -> int:
        """WanPipeline's own rounding: a count that is not 1 + k * ratio becomes ``n // ratio * ratio + 1``, so 32
        frames give 33 at ratio 4, and a ratio of 1 always adds a frame. The causal VAE decodes 1 + k * ratio
        frames to exactly that many."""
        frames, ratio = self.requested_frames(call_kwargs), self.temporal_compression
        if frames % ratio != 1:
            frames = frames // ratio * ratio + 1
        return max(frames, 1)

    def _boundary(self) -> float | None:
        ratio = self.pipe.config.get("boundary_ratio")
        return None if ratio is None else ratio * self.scheduler.config.num_train_timesteps

    def denoiser_modules(self) -> dict[str, torch.nn.Module]:
        names = ("transformer", "transformer_2")
        return {name: module for name in names if (module := getattr(self.pipe, name, None)) is not None}

    def low_noise(self, timestep: float | torch.Tensor) -> bool:
        """Below ``boundary_ratio * num_train_timesteps`` (never for Wan 2.1). ``timestep`` is compared as given: a
        tensor in its own dtype, as the pipeline compares it."""
        boundary = self._boundary()
        return boundary is not None and not bool(timestep >= boundary)


class CogVideoXAdapter(FamilyAdapter):
    """CogVideoX: batched CFG; DDIM / DPM schedulers on ``alphas_cumprod`` with v- or epsilon-prediction.

    With ``use_dynamic_cfg`` the pipeline changes its scale every step; the look-ahead uses the scale of the step just
    taken (the pipeline does not keep the flag).
    """

    pipeline_class = CogVideoXPipeline
    decoder_class = CogVideoXDecoder
    batched_cfg = True

    def default_fps(self, call_kwargs: Mapping[str, Any] | None = None) -> float:
        # CogVideoX 2B/5B: 8 fps; CogVideoX 1.5 (temporal patches): 16 fps.
        return 16.0 if self.pipe.transformer.config.patch_size_t is not None else 8.0

    def batch_kwargs(self, prompt: str, count: int) -> dict[str, Any]:
        return {"prompt": [prompt] * count}  # CogVideoXPipeline forces num_videos_per_prompt = 1

    def requested_frames(self, call_kwargs: Mapping[str, Any]) -> int:
        return int(call_kwargs.get("num_frames") or self.pipe.transformer.config.sample_frames)

    def model_input(
        self, latents: torch.Tensor, recorded: torch.Tensor, timestep: torch.Tensor
    ) -> torch.Tensor:
        return self.scheduler.scale_model_input(super().model_input(latents, recorded, timestep), timestep)

    def is_clean(self, index: int) -> bool:
        return index >= len(self.scheduler.timesteps)

    def x0(self, latents: torch.Tensor, prediction: torch.Tensor, index: int) -> torch.Tensor:
        """The scheduler's own x0 at step ``index``: alpha of that step's timestep, as its next ``step`` computes it."""
        timestep = int(self.scheduler.timesteps[index])
        alpha = self.scheduler.alphas_cumprod[timestep].to(latents.device, torch.float32)
        return ddim_x0(latents.float(), prediction.float(), alpha, self.scheduler.config.prediction_type)


class LTXAdapter(FamilyAdapter):
    """LTX-Video: packed latents, batched CFG with guidance rescale, rope and grid passed to the transformer."""

    pipeline_class = LTXPipeline
    decoder_class = LTXDecoder
    batched_cfg = True

    def default_fps(self, call_kwargs: Mapping[str, Any] | None = None) -> float:
        return float((call_kwargs or {}).get("frame_rate", self.call_default("frame_rate")))

    def grid(self, calls: list[TransformerCall]) -> tuple[int, int, int] | None:
        kwargs = calls[0][1]
        return int(kwargs["num_frames"]), int(kwargs["height"]), int(kwargs["width"])

    def combine(self, outputs: list[torch.Tensor], batch: int, scale: float | None) -> torch.Tensor:
        prediction = super().combine(outputs, batch, scale)
        rescale = float(self.pipe.guidance_rescale)
        if outputs[0].shape[0] == 2 * batch and rescale > 0:
            prediction = rescale_noise_cfg(prediction, cfg_halves(outputs[0])[1], guidance_rescale=rescale)
        return prediction


class HunyuanVideoAdapter(FamilyAdapter):
    """HunyuanVideo: guidance-distilled (the scale is a transformer input, replayed as recorded); true CFG, when the
    pipeline runs it (negative prompt, ``true_cfg_scale > 1``), as a second call whose scale the pipeline does not keep."""

    pipeline_class = HunyuanVideoPipeline
    decoder_class = HunyuanVideoDecoder

    def default_fps(self, call_kwargs: Mapping[str, Any] | None = None) -> float:
        return 24.0

    def cfg_scale(self, timestep: float) -> float | None:
        return None

    def call_cfg_scale(self, call_kwargs: Mapping[str, Any]) -> float | None:
        """``true_cfg_scale`` when the call runs true CFG (``> 1`` with a negative prompt or its embeddings)."""
        scale = call_kwargs.get("true_cfg_scale", self.call_default("true_cfg_scale"))
        negative = (
            call_kwargs.get("negative_prompt") is not None
            or call_kwargs.get("negative_prompt_embeds") is not None
        )
        return float(scale) if negative and scale is not None and scale > 1 else None


_REGISTRY: dict[type[DiffusionPipeline], type[FamilyAdapter]] = {}


def register_family(adapter_class: type[FamilyAdapter]) -> type[FamilyAdapter]:
    """Make :func:`family_adapter` wrap ``adapter_class.pipeline_class`` (and its subclasses) with ``adapter_class``."""
    _REGISTRY[adapter_class.pipeline_class] = adapter_class
    return adapter_class


for _adapter in (WanAdapter, CogVideoXAdapter, LTXAdapter, HunyuanVideoAdapter):
    register_family(_adapter)


def supported_pipelines() -> list[str]:
    """Names of the pipeline classes reranking and guidance support."""
    return [cls.__name__ for cls in _REGISTRY]


def family_adapter(pipe: DiffusionPipeline | FamilyAdapter, **decoder_options: Any) -> FamilyAdapter:
    """The adapter for ``pipe`` (an adapter is returned as is). Unsupported classes raise a ConfigError listing the
    supported ones. ``decoder_options`` go to the family's decoder (LTX: decode_timestep, decode_noise_scale,
    generator)."""
    if isinstance(pipe, FamilyAdapter):
        return pipe
    for cls in type(pipe).__mro__:
        if cls in _REGISTRY:
            return _REGISTRY[cls](pipe, **decoder_options)
    raise ConfigError(
        f"{type(pipe).__name__} is not supported by reward_guidance; supported pipelines: "
        f"{', '.join(supported_pipelines())}. Load one of those (e.g. WanPipeline for Wan 2.1 / 2.2), or register an "
        "adapter for your class with reward_guidance.families.register_family"
    )


def decode_latents(
    pipe: DiffusionPipeline | FamilyAdapter, latents: torch.Tensor, **options: Any
) -> torch.Tensor:
    """Decode ``output_type="latent"`` latents of ``pipe`` into (B, F, C, H, W) frames in [0, 1].

    ``options`` are those of :meth:`~reward_guidance.decoding.LatentDecoder.__call__` (frames, grad, grid, slicing,
    tiling); for VAE checkpointing wrap the call and its backward in ``scoped.gradient_checkpointing``.
    """
    return family_adapter(pipe).decoder(latents, **options)
