"""What a sampling loop needs from each diffusers video pipeline family, taken from the pipeline's own components.

A :class:`DenoiserFamily` knows how one pipeline class encodes prompts, draws its initial latents, sets its
scheduler's timesteps and calls its transformer (inputs, classifier-free guidance layout, experts), exactly as that
pipeline's ``__call__`` does, so that a hand-written sampling loop (the RL rollout, DRaFT) runs the same computation
as the pipeline. Supported: :class:`~diffusers.WanPipeline` (Wan2.1 and Wan2.2 with two experts),
:class:`~diffusers.CogVideoXPipeline` (a DDIM / v-prediction model), :class:`~diffusers.LTXPipeline` and
:class:`~diffusers.HunyuanVideoPipeline`. The conventions that guidance shares (which expert and CFG scale at a
timestep, the doubled-batch CFG layout and combination, latent frame counts) and latent-to-pixel decoding live in
:mod:`reward_guidance.families`; the classes here take them from the pipeline's adapter there.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, WanPipeline
from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift, retrieve_timesteps

from descore.errors import ConfigError, check_positive
from reward_guidance.families import (
    CogVideoXAdapter,
    FamilyAdapter,
    HunyuanVideoAdapter,
    LTXAdapter,
    WanAdapter,
    cfg_batch,
    cfg_halves,
    classifier_free_guidance,
    family_adapter,
)

logger = logging.getLogger(__name__)

ScheduleKind = Literal["flow", "ddim"]


@dataclass
class SamplingSpec:
    """How to sample videos: size, steps and guidance, as the pipeline's ``__call__`` arguments of the same names.

    Defaults are Flow-GRPO's Wan2.1 training settings (240x416, 33 frames, 20 steps, CFG 4.5).
    """

    height: int = field(
        default=240,
        metadata={
            "help": "video height in pixels (a multiple of the VAE's spatial compression times the patch size)"
        },
    )
    width: int = field(default=416, metadata={"help": "video width in pixels (same rule as height)"})
    num_frames: int = field(
        default=33,
        metadata={"help": "Frames; ``num_frames - 1`` must be divisible by the VAE's temporal compression."},
    )
    num_inference_steps: int = field(default=20, metadata={"help": "Sampling steps."})
    guidance_scale: float = field(
        default=4.5,
        metadata={
            "help": "Classifier-free guidance scale (1 turns CFG off). For HunyuanVideo, the embedded (distilled) guidance."
        },
    )
    guidance_scale_2: float | None = field(
        default=None,
        metadata={
            "help": "Wan2.2 only: the guidance scale of the low-noise expert (None: same as ``guidance_scale``)."
        },
    )
    true_cfg_scale: float = field(
        default=1.0,
        metadata={
            "help": "HunyuanVideo only: true classifier-free guidance scale with the negative prompt (1 turns it off)."
        },
    )
    negative_prompt: str = field(
        default="", metadata={"help": "The negative prompt of classifier-free guidance."}
    )
    max_sequence_length: int = field(default=226, metadata={"help": "Text tokens kept by the text encoder."})
    frame_rate: int = field(
        default=25, metadata={"help": "LTX only: the frame rate that scales the temporal rotary embedding."}
    )
    prompt_template: dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "HunyuanVideo only: the prompt template (``{'template': ..., 'crop_start': ...}``); None: the pipeline's."
        },
    )
    fps: float | None = field(
        default=None,
        metadata={
            "help": "Frame rate of the generated videos, as the reward is told (rewards that sample by time, such as "
            "DeScore, resample to their own rate), and the pipeline too if its ``__call__`` takes ``fps``. None: the "
            "family's (Wan 16, CogVideoX 8 or 16, LTX ``frame_rate``)."
        },
    )

    def __post_init__(self) -> None:
        for name in ("height", "width", "num_frames", "num_inference_steps", "max_sequence_length"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"sampling.{name}: must be a positive integer, got {getattr(self, name)!r}")
        if self.guidance_scale < 0 or self.true_cfg_scale < 0:
            raise ConfigError("sampling.guidance_scale / true_cfg_scale: must not be negative")
        if self.fps is not None:
            check_positive("sampling.fps", self.fps, "a positive number of frames per second or null")


@dataclass
class Conditioning:
    """Transformer inputs that follow the batch: the prompt branch and, with CFG, the negative branch.

    Every tensor has the batch in dim 0; :meth:`select` takes a subset of samples.
    """

    positive: dict[str, torch.Tensor]
    negative: dict[str, torch.Tensor] | None = None

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Conditioning:
        negative = None if self.negative is None else {k: fn(v) for k, v in self.negative.items()}
        return Conditioning({k: fn(v) for k, v in self.positive.items()}, negative)

    def select(self, index: torch.Tensor | slice) -> Conditioning:
        """The conditioning of the samples at ``index``."""
        return self._map(lambda v: v[index])

    @staticmethod
    def concat(parts: list[Conditioning]) -> Conditioning:
        """The conditionings of several batches as one batch, in order."""
        positive = {k: torch.cat([p.positive[k] for p in parts]) for k in parts[0].positive}
        negative = None
        if parts[0].negative is not None:
            negative = {k: torch.cat([p.negative[k] for p in parts]) for k in parts[0].negative}
        return Conditioning(positive, negative)

    def repeat_interleave(self, repeats: int) -> Conditioning:
        """Each sample's conditioning repeated ``repeats`` times in a row (a group per prompt)."""
        return self._map(lambda v: v.repeat_interleave(repeats, 0))


@dataclass
class Schedule:
    """The timesteps of one sampling run and the noise levels a stochastic step needs.

    ``kind="flow"``: ``sigmas`` (T + 1,) with ``sigmas[-1]`` the end point. ``kind="ddim"``: ``alphas`` and
    ``alphas_prev`` (T,), the cumulative alphas of each step's current and next timestep, ``prediction_type``, and
    the scheduler's whole ``alphas_cumprod`` table (for training on noised clean samples).
    """

    kind: ScheduleKind
    timesteps: torch.Tensor
    sigmas: torch.Tensor | None = None
    alphas: torch.Tensor | None = None
    alphas_prev: torch.Tensor | None = None
    alphas_cumprod: torch.Tensor | None = None
    prediction_type: str = "flow_prediction"
    num_train_timesteps: int = 1000

    def __len__(self) -> int:
        return len(self.timesteps)


@dataclass
class SampleContext:
    """Everything a denoiser call needs besides the latents, fixed for one sampling run."""

    spec: SamplingSpec
    schedule: Schedule
    conditioning: Conditioning
    static: dict[str, Any] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


class DenoiserFamily:
    """One pipeline family's sampling components. Subclasses mirror their pipeline's ``__call__``."""

    #: Registry name ("wan", "cogvideox", "ltx", "hunyuanvideo").
    name: str = ""
    #: The reward_guidance adapter of the same pipeline class, which holds the conventions guidance shares.
    adapter_class: ClassVar[type[FamilyAdapter]]
    #: "flow" for rectified-flow models, "ddim" for variance-preserving ones.
    kind: ScheduleKind = "flow"

    @property
    def pipeline_classes(self) -> tuple[type[DiffusionPipeline], ...]:
        """The pipeline classes this family serves (its adapter's)."""
        return (self.adapter_class.pipeline_class,)

    @property
    def batched_cfg(self) -> bool:
        """Whether CFG runs both branches in one batched call (negative first), as the pipeline does."""
        return self.adapter_class.batched_cfg

    # --- text and latents -------------------------------------------------------------------------------------
    def encode(
        self, pipe: DiffusionPipeline, prompts: list[str], spec: SamplingSpec, device: torch.device
    ) -> Conditioning:
        """Text conditioning for ``prompts`` (and the negative prompt when CFG is on)."""
        raise NotImplementedError

    def latent_frames(self, pipe: DiffusionPipeline, num_frames: int) -> int:
        return family_adapter(pipe).latent_frames(num_frames)

    def check(self, pipe: DiffusionPipeline, spec: SamplingSpec) -> None:
        """Refuse sizes the pipeline would silently round (the trained policy must be the one that is sampled)."""
        temporal = family_adapter(pipe).temporal_compression
        if (spec.num_frames - 1) % temporal:
            raise ConfigError(
                f"sampling.num_frames: {type(pipe).__name__} needs num_frames - 1 divisible by {temporal}, "
                f"got {spec.num_frames}"
            )
        multiple = _spatial(pipe) * self.spatial_patch(pipe)
        if spec.height % multiple or spec.width % multiple:
            raise ConfigError(
                f"sampling.height/width: {type(pipe).__name__} needs multiples of {multiple}, "
                f"got {spec.height}x{spec.width}"
            )

    def spatial_patch(self, pipe: DiffusionPipeline) -> int:
        patch = pipe.transformer.config.patch_size
        return int(patch[-1] if isinstance(patch, (tuple, list)) else patch)

    def initial_latents(
        self,
        pipe: DiffusionPipeline,
        spec: SamplingSpec,
        generators: list[torch.Generator],
        device: torch.device,
    ) -> torch.Tensor:
        """The initial noise in the transformer's layout, drawn by the pipeline's own ``prepare_latents``."""
        return pipe.prepare_latents(
            len(generators),
            self.latent_channels(pipe),
            spec.height,
            spec.width,
            spec.num_frames,
            torch.float32,
            device,
            generators,
        )

    def latent_channels(self, pipe: DiffusionPipeline) -> int:
        return pipe.transformer.config.in_channels

    # --- schedule and denoiser ----------------------------------------------------------------------------------
    def schedule(self, pipe: DiffusionPipeline, spec: SamplingSpec, device: torch.device) -> Schedule:
        """Set the pipeline's scheduler as its ``__call__`` does and read its timesteps and noise levels."""
        scheduler = pipe.scheduler
        scheduler.set_timesteps(spec.num_inference_steps, device=device)
        return _flow_schedule(pipe)

    def static_inputs(
        self, pipe: DiffusionPipeline, spec: SamplingSpec, device: torch.device
    ) -> dict[str, Any]:
        """Transformer inputs that do not follow the batch (positional embeddings, latent grid sizes)."""
        return {}

    def denoiser(
        self, pipe: DiffusionPipeline, timestep: torch.Tensor, spec: SamplingSpec
    ) -> tuple[torch.nn.Module, float]:
        """The transformer (expert) used at ``timestep`` and the CFG scale that goes with it."""
        return family_adapter(pipe).denoiser(timestep, spec.guidance_scale, spec.guidance_scale_2)

    def cfg_enabled(self, spec: SamplingSpec) -> bool:
        return spec.guidance_scale > 1.0

    def forward(
        self,
        module: torch.nn.Module,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        inputs: dict[str, torch.Tensor],
        static: dict[str, Any],
    ) -> torch.Tensor:
        """One transformer call on a batch (timestep (B,)); returns the raw prediction."""
        raise NotImplementedError

    def denoiser_modules(self, pipe: DiffusionPipeline) -> dict[str, torch.nn.Module]:
        """The trainable transformers by component name (Wan2.2 has two experts)."""
        return family_adapter(pipe).denoiser_modules()

    def first_denoiser(self, pipe: DiffusionPipeline) -> torch.nn.Module:
        """The first of :meth:`denoiser_modules` (its config and dtype stand for all of them)."""
        return next(iter(self.denoiser_modules(pipe).values()))

    def latent_grid(self, pipe: DiffusionPipeline, spec: SamplingSpec) -> tuple[int, int, int] | None:
        """(latent frames, height, width) for decoders of packed latents (LTX); None for the others."""
        return None

    def encode_video(self, pipe: DiffusionPipeline, videos: torch.Tensor) -> torch.Tensor:
        """Videos (B, F, C, H, W) in [0, 1] -> latents in the transformer's layout (the VAE posterior's mode), the
        inverse of the pipeline's decoding; for training on given videos (offline DPO pairs)."""
        pixels = (videos.permute(0, 2, 1, 3, 4) * 2 - 1).to(pipe.vae.dtype)
        with torch.no_grad():
            z = pipe.vae.encode(pixels).latent_dist.mode().float()
        return self.normalise_latents(pipe, z)

    def normalise_latents(self, pipe: DiffusionPipeline, z: torch.Tensor) -> torch.Tensor:
        """The VAE's (B, C, T, h, w) latents in the transformer's layout and scale (default: times scaling_factor)."""
        return z * pipe.vae.config.scaling_factor


def _spatial(pipe: DiffusionPipeline) -> int:
    return int(getattr(pipe, "vae_scale_factor_spatial", None) or pipe.vae_spatial_compression_ratio)


def _flow_schedule(pipe: DiffusionPipeline) -> Schedule:
    scheduler = pipe.scheduler
    is_flow = isinstance(scheduler, FlowMatchEulerDiscreteScheduler) or scheduler.config.get(
        "use_flow_sigmas", False
    )
    if not is_flow:
        raise ConfigError(
            f"scheduler: {type(pipe).__name__} has {type(scheduler).__name__} without flow-matching sigmas; the "
            "flow SDE step needs a FlowMatchEulerDiscreteScheduler or a scheduler with use_flow_sigmas=True"
        )
    sigmas = scheduler.sigmas.detach().float().cpu()
    timesteps = scheduler.timesteps
    if len(sigmas) != len(timesteps) + 1:
        raise ConfigError(
            f"scheduler: {type(scheduler).__name__} gives {len(sigmas)} sigmas for {len(timesteps)} timesteps"
        )
    return Schedule(
        "flow", timesteps, sigmas=sigmas, num_train_timesteps=scheduler.config.num_train_timesteps
    )


class WanFamily(DenoiserFamily):
    """WanPipeline: separate CFG calls; Wan2.2 switches to ``transformer_2`` below ``boundary_ratio``."""

    name = "wan"
    adapter_class = WanAdapter

    def encode(self, pipe, prompts, spec, device):
        positive, negative = pipe.encode_prompt(
            prompt=prompts,
            negative_prompt=[spec.negative_prompt] * len(prompts),
            do_classifier_free_guidance=self.cfg_enabled(spec),
            num_videos_per_prompt=1,
            max_sequence_length=spec.max_sequence_length,
            device=device,
        )
        dtype = self.first_denoiser(pipe).dtype
        return Conditioning(
            {"encoder_hidden_states": positive.to(dtype)},
            None if negative is None else {"encoder_hidden_states": negative.to(dtype)},
        )

    def cfg_enabled(self, spec):
        # As WanPipeline: guidance_scale decides whether CFG runs at all; guidance_scale_2 only sets its scale
        # on the low-noise expert.
        return spec.guidance_scale > 1.0

    def spatial_patch(self, pipe):
        return int(self.first_denoiser(pipe).config.patch_size[-1])

    def latent_channels(self, pipe):
        return self.first_denoiser(pipe).config.in_channels

    def forward(self, module, latents, timestep, inputs, static):
        if static.get("expand_timesteps"):
            # Wan2.2 TI2V: one timestep per latent token (all equal for text-to-video).
            tokens = latents.shape[2] * (latents.shape[3] // 2) * (latents.shape[4] // 2)
            timestep = timestep[:, None].expand(-1, tokens)
        return module(
            hidden_states=latents.to(inputs["encoder_hidden_states"].dtype),
            timestep=timestep,
            encoder_hidden_states=inputs["encoder_hidden_states"],
            return_dict=False,
        )[0]

    def static_inputs(self, pipe, spec, device):
        return {"expand_timesteps": bool(pipe.config.get("expand_timesteps", False))}

    def normalise_latents(self, pipe, z):
        shape = (1, pipe.vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(pipe.vae.config.latents_mean).view(shape).to(z)
        std = torch.tensor(pipe.vae.config.latents_std).view(shape).to(z)
        return (z - mean) / std


class CogVideoXFamily(DenoiserFamily):
    """CogVideoXPipeline: frame-first latents (B, T, C, h, w), batched CFG, a DDIM scheduler (v-prediction)."""

    name = "cogvideox"
    adapter_class = CogVideoXAdapter
    kind = "ddim"

    def check(self, pipe, spec):
        super().check(pipe, spec)
        patch_t = pipe.transformer.config.patch_size_t
        frames = self.latent_frames(pipe, spec.num_frames)
        if patch_t is not None and frames % patch_t:
            raise ConfigError(
                f"sampling.num_frames: CogVideoX 1.5 needs latent frames divisible by patch_size_t={patch_t}, "
                f"got {frames} latent frames for {spec.num_frames} frames"
            )
        if spec.max_sequence_length != pipe.transformer.config.max_text_seq_length:
            raise ConfigError(
                f"sampling.max_sequence_length: CogVideoX's transformer takes exactly "
                f"{pipe.transformer.config.max_text_seq_length} text tokens, got {spec.max_sequence_length}"
            )

    def encode(self, pipe, prompts, spec, device):
        positive, negative = pipe.encode_prompt(
            prompts,
            [spec.negative_prompt] * len(prompts),
            self.cfg_enabled(spec),
            num_videos_per_prompt=1,
            max_sequence_length=spec.max_sequence_length,
            device=device,
        )
        return Conditioning(
            {"encoder_hidden_states": positive},
            None if negative is None else {"encoder_hidden_states": negative},
        )

    def initial_latents(self, pipe, spec, generators, device):
        return pipe.prepare_latents(
            len(generators),
            self.latent_channels(pipe),
            spec.num_frames,
            spec.height,
            spec.width,
            pipe.text_encoder.dtype,
            device,
            generators,
        ).float()

    def schedule(self, pipe, spec, device):
        scheduler = pipe.scheduler
        if not hasattr(scheduler, "alphas_cumprod"):
            raise ConfigError(
                f"scheduler: {type(scheduler).__name__} has no alphas_cumprod for the DDIM step"
            )
        scheduler.set_timesteps(spec.num_inference_steps, device=device)
        stride = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
        final = getattr(scheduler, "final_alpha_cumprod", torch.tensor(1.0))
        alphas, alphas_prev = [], []
        for t in scheduler.timesteps.tolist():
            alphas.append(scheduler.alphas_cumprod[t])
            prev = t - stride
            alphas_prev.append(scheduler.alphas_cumprod[prev] if prev >= 0 else final)
        return Schedule(
            "ddim",
            scheduler.timesteps,
            alphas=torch.stack([torch.as_tensor(a) for a in alphas]).float().cpu(),
            alphas_prev=torch.stack([torch.as_tensor(a) for a in alphas_prev]).float().cpu(),
            alphas_cumprod=torch.as_tensor(scheduler.alphas_cumprod).float().cpu(),
            prediction_type=scheduler.config.prediction_type,
            num_train_timesteps=scheduler.config.num_train_timesteps,
        )

    def static_inputs(self, pipe, spec, device):
        if not pipe.transformer.config.use_rotary_positional_embeddings:
            return {"image_rotary_emb": None}
        emb = pipe._prepare_rotary_positional_embeddings(
            spec.height, spec.width, self.latent_frames(pipe, spec.num_frames), device
        )
        return {"image_rotary_emb": emb}

    def normalise_latents(self, pipe, z):
        return (z * pipe.vae_scaling_factor_image).permute(0, 2, 1, 3, 4)

    def forward(self, module, latents, timestep, inputs, static):
        return module(
            hidden_states=latents.to(inputs["encoder_hidden_states"].dtype),
            encoder_hidden_states=inputs["encoder_hidden_states"],
            timestep=timestep,
            image_rotary_emb=static["image_rotary_emb"],
            return_dict=False,
        )[0]


class LTXFamily(DenoiserFamily):
    """LTXPipeline: packed latents (B, tokens, C), batched CFG, resolution-dependent sigma shift."""

    name = "ltx"
    adapter_class = LTXAdapter

    def spatial_patch(self, pipe):
        return int(pipe.transformer_spatial_patch_size)

    def encode(self, pipe, prompts, spec, device):
        positive, mask, negative, negative_mask = pipe.encode_prompt(
            prompt=prompts,
            negative_prompt=[spec.negative_prompt] * len(prompts),
            do_classifier_free_guidance=self.cfg_enabled(spec),
            num_videos_per_prompt=1,
            max_sequence_length=spec.max_sequence_length,
            device=device,
        )
        neg = (
            None
            if negative is None
            else {"encoder_hidden_states": negative, "encoder_attention_mask": negative_mask}
        )
        return Conditioning({"encoder_hidden_states": positive, "encoder_attention_mask": mask}, neg)

    def latent_grid(self, pipe, spec):
        return (
            self.latent_frames(pipe, spec.num_frames),
            spec.height // _spatial(pipe),
            spec.width // _spatial(pipe),
        )

    def normalise_latents(self, pipe, z):
        z = pipe._normalize_latents(
            z, pipe.vae.latents_mean, pipe.vae.latents_std, pipe.vae.config.scaling_factor
        )
        return pipe._pack_latents(
            z, pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
        )

    def schedule(self, pipe, spec, device):
        frames, height, width = self.latent_grid(pipe, spec)
        n = spec.num_inference_steps
        config = pipe.scheduler.config
        mu = calculate_shift(
            frames * height * width,
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )
        retrieve_timesteps(pipe.scheduler, n, device, sigmas=np.linspace(1.0, 1 / n, n), mu=mu)
        return _flow_schedule(pipe)

    def static_inputs(self, pipe, spec, device):
        frames, height, width = self.latent_grid(pipe, spec)
        return {
            "num_frames": frames,
            "height": height,
            "width": width,
            "rope_interpolation_scale": (
                pipe.vae_temporal_compression_ratio / spec.frame_rate,
                pipe.vae_spatial_compression_ratio,
                pipe.vae_spatial_compression_ratio,
            ),
        }

    def forward(self, module, latents, timestep, inputs, static):
        return module(
            hidden_states=latents.to(inputs["encoder_hidden_states"].dtype),
            encoder_hidden_states=inputs["encoder_hidden_states"],
            timestep=timestep,
            encoder_attention_mask=inputs["encoder_attention_mask"],
            num_frames=static["num_frames"],
            height=static["height"],
            width=static["width"],
            rope_interpolation_scale=static["rope_interpolation_scale"],
            return_dict=False,
        )[0]


class HunyuanVideoFamily(DenoiserFamily):
    """HunyuanVideoPipeline: guidance-distilled (the scale is a transformer input); optional true CFG."""

    name = "hunyuanvideo"
    adapter_class = HunyuanVideoAdapter

    def cfg_enabled(self, spec):
        return spec.true_cfg_scale > 1.0

    def _encode_one(self, pipe, prompts, spec, device):
        kwargs = {} if spec.prompt_template is None else {"prompt_template": spec.prompt_template}
        embeds, pooled, mask = pipe.encode_prompt(
            prompt=prompts,
            num_videos_per_prompt=1,
            device=device,
            max_sequence_length=spec.max_sequence_length,
            **kwargs,
        )
        dtype = pipe.transformer.dtype
        guidance = (
            torch.full((len(prompts),), spec.guidance_scale, dtype=dtype, device=embeds.device) * 1000.0
        )
        return {
            "encoder_hidden_states": embeds.to(dtype),
            "encoder_attention_mask": mask.to(dtype),
            "pooled_projections": pooled.to(dtype),
            "guidance": guidance,
        }

    def encode(self, pipe, prompts, spec, device):
        negative = None
        if self.cfg_enabled(spec):
            negative = self._encode_one(pipe, [spec.negative_prompt] * len(prompts), spec, device)
        return Conditioning(self._encode_one(pipe, prompts, spec, device), negative)

    def denoiser(self, pipe, timestep, spec):
        return family_adapter(pipe).denoiser(timestep, spec.true_cfg_scale)

    def schedule(self, pipe, spec, device):
        n = spec.num_inference_steps
        retrieve_timesteps(pipe.scheduler, n, device, sigmas=np.linspace(1.0, 0.0, n + 1)[:-1])
        return _flow_schedule(pipe)

    def forward(self, module, latents, timestep, inputs, static):
        return module(
            hidden_states=latents.to(inputs["encoder_hidden_states"].dtype),
            timestep=timestep.to(torch.float32),
            encoder_hidden_states=inputs["encoder_hidden_states"],
            encoder_attention_mask=inputs["encoder_attention_mask"],
            pooled_projections=inputs["pooled_projections"],
            guidance=inputs["guidance"],
            return_dict=False,
        )[0]


FAMILIES: tuple[DenoiserFamily, ...] = (WanFamily(), CogVideoXFamily(), LTXFamily(), HunyuanVideoFamily())


def family_of(pipe: DiffusionPipeline) -> DenoiserFamily:
    """The :class:`DenoiserFamily` serving ``pipe``'s class (subclasses included)."""
    for family in FAMILIES:
        if isinstance(pipe, family.pipeline_classes):
            return family
    supported = [cls.__name__ for family in FAMILIES for cls in family.pipeline_classes]
    raise ConfigError(
        f"pipeline: {type(pipe).__name__} is not a supported video pipeline; supported: {supported}"
    )


def guided_output(
    family: DenoiserFamily,
    module: torch.nn.Module,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    conditioning: Conditioning,
    scale: float,
    static: dict[str, Any],
) -> torch.Tensor:
    """One expert's output (fp32) for ``latents`` at per-sample ``timesteps`` (B,), with classifier-free guidance
    at ``scale`` laid out as the pipeline does it (the conditional branch alone when there is no negative branch
    or ``scale`` is 1)."""
    if conditioning.negative is None or scale == 1.0:
        return family.forward(module, latents, timesteps, conditioning.positive, static).float()
    if family.batched_cfg:
        both = {
            k: cfg_batch(conditioning.negative[k], conditioning.positive[k]) for k in conditioning.positive
        }
        out = family.forward(
            module, cfg_batch(latents, latents), cfg_batch(timesteps, timesteps), both, static
        ).float()
        uncond, cond = cfg_halves(out)
    else:
        cond = family.forward(module, latents, timesteps, conditioning.positive, static).float()
        uncond = family.forward(module, latents, timesteps, conditioning.negative, static).float()
    return classifier_free_guidance(uncond, cond, scale)


def predict(
    family: DenoiserFamily,
    pipe: DiffusionPipeline,
    latents: torch.Tensor,
    step: int,
    context: SampleContext,
    conditioning: Conditioning | None = None,
) -> torch.Tensor:
    """The guided model output (fp32) at sampling step ``step`` for ``latents``, as the pipeline computes it.

    ``conditioning`` defaults to the context's (pass a selected subset for a micro-batch).
    """
    conditioning = context.conditioning if conditioning is None else conditioning
    t = context.schedule.timesteps[step]
    module, scale = family.denoiser(pipe, t, context.spec)
    timesteps = t.expand(latents.shape[0])
    return guided_output(family, module, latents, timesteps, conditioning, scale, context.static)


def pipeline_call_kwargs(pipe: DiffusionPipeline, spec: SamplingSpec) -> dict[str, Any]:
    """The spec as keyword arguments of ``pipe.__call__`` (fields the pipeline does not take are left out), so that
    the pipeline generates the spec's videos."""
    accepted = inspect.signature(type(pipe).__call__).parameters
    kwargs = {
        f.name: getattr(spec, f.name)
        for f in fields(spec)
        if f.name in accepted and getattr(spec, f.name) is not None
    }
    if isinstance(pipe, WanPipeline) and family_adapter(pipe).temporal_compression == 1:
        # WanPipeline rounds num_frames to k * factor + 1, which for a factor of 1 adds a frame
        kwargs["num_frames"] = spec.num_frames - 1
    return kwargs
