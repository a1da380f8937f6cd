"""The toy text-to-video generator: a tiny Wan2.1 trained on toy-world videos, shipped with the package.

It is a real :class:`~diffusers.WanPipeline` (UMT5 text encoder, :class:`~diffusers.AutoencoderKLWan`,
:class:`~diffusers.WanTransformer3DModel`, UniPC flow-matching sampler) small enough to sample a 9-frame 48x48 video
in under a second on a CPU. Being weakly trained, it gets colours and backgrounds mostly right and motions, sizes,
shapes and object integrity only sometimes: a real spread of quality for best-of-N, reward guidance and
generator fine-tuning to work on (docs/toy_generator.md has the measurements).

Training has two phases, as the toy-world trials recommend:

1. the VAE, made per-frame (no temporal compression, and the causal convolutions' past-frame taps held at zero, so
   every frame is encoded and decoded on its own) and trained on single frames of clean toy renders with an L1 + MSE
   reconstruction loss and a small KL term;
2. the transformer, with rectified flow on the VAE latents of clean renders: ``x_s = (1 - s) x0 + s eps``, target
   ``v = eps - x0``, shifted logit-normal noise levels matching the sampler's flow shift, 10% caption dropout for
   classifier-free guidance, AdamW with a cosine schedule and an EMA of the weights. Prompts are encoded by the
   pipeline's own frozen text encoder through :meth:`~diffusers.WanPipeline.encode_prompt`, so the trained model
   runs inside the unmodified pipeline.

Use :func:`load_toy_generator` with :data:`TOY_GENERATOR_CALL`; :func:`train_toy_generator` reproduces the shipped
checkpoint and :func:`evaluate_generator` measures prompt agreement with the analyzer.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import WanPipeline
from tqdm.auto import tqdm

from descore.answer import DIMENSIONS, overall_from_subscores
from descore.errors import CheckpointError, ConfigError
from toyworld.analyzer import DetectedObject, measure, score
from toyworld.prompts import parse_prompt, write_prompt
from toyworld.render import render
from toyworld.scene import BACKGROUND_COLORS, Scene, SceneSpec, WorldConfig, object_path, sample_scene
from toyworld.tiny_models.video_pipelines import build_video_pipeline

logger = logging.getLogger(__name__)

#: Where the shipped checkpoint lives (package data).
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "toy_generator"
#: The training settings and measurements written next to the pipeline's own files.
TRAINING_RECORD = "toy_generator.json"

#: The world the generator draws: 9 frames of 48x48. The world is resolution-free (geometry in units of the
#: shorter side) and the analyzer reads 48x48 videos as well as 64x64 ones; 48 gives a 12x12 latent and 6x6
#: transformer tokens per frame, 1.8x fewer than 64x64, which buys the steps that object coherence needs within
#: the CPU budget (docs/toy_generator.md).
WORLD = WorldConfig(height=48, width=48)

#: Longest prompt in tokens the generator reads. Toy prompts are up to about 110 T5 tokens (many toy words are
#: spelled out piece by piece); the pipeline pads prompt embeddings with zeros to this length, and the transformer
#: was trained with exactly this padding, so call the pipeline with this ``max_sequence_length``.
MAX_SEQUENCE_LENGTH = 128

#: Architecture, as ``build_video_pipeline("wan2.1", overrides=...)`` arguments. The VAE compresses 4x in space and
#: not in time (latent 8 x 9 x 12 x 12 per video); the transformer sees 2 x 2 patches of it: 324 tokens per video.
#: Patches of 2 rather than 4 are what made objects hold together from frame to frame (docs/toy_generator.md).
TOY_GENERATOR_OVERRIDES: dict[str, dict[str, Any]] = {
    "vae": {
        "base_dim": 8,
        "z_dim": 8,
        "dim_mult": [1, 2, 4],
        "num_res_blocks": 1,
        "temperal_downsample": [False, False],
    },
    "transformer": {
        "patch_size": (1, 2, 2),
        "num_attention_heads": 4,
        "attention_head_dim": 32,
        "ffn_dim": 512,
        "num_layers": 4,
        "rope_max_seq_len": 32,
    },
    "text_encoder": {"d_model": 64, "d_ff": 128, "d_kv": 16, "num_heads": 4, "num_layers": 2},
}

#: Recommended call: ``pipe(prompt, **TOY_GENERATOR_CALL, generator=...)``. ``num_frames`` is 8 because WanPipeline
#: rounds the frame count to ``k * temporal_factor + 1`` and this VAE's temporal factor is 1, so asking for 8 frames
#: gives the world's 9 (the rounding warning diffusers would log on every call is filtered, :class:`UnitRoundingFilter`).
TOY_GENERATOR_CALL: dict[str, Any] = {
    "height": WORLD.height,
    "width": WORLD.width,
    "num_frames": WORLD.num_frames - 1,
    "num_inference_steps": 16,
    "guidance_scale": 4.0,
    "max_sequence_length": MAX_SEQUENCE_LENGTH,
}

#: VAE training: pixels this far (RGB distance) from the background's tones count as object pixels, and weigh
#: 1 + this as much as background pixels in the reconstruction loss.
OBJECT_PIXEL_DISTANCE = 0.15
OBJECT_PIXEL_WEIGHT = 8.0

#: Per-attribute agreement measured by :func:`evaluate_generator` (besides the analyzer's own sub-scores).
AGREEMENT_KEYS: tuple[str, ...] = (
    "colour",
    "shape",
    "size",
    "motion",
    "intact",
    "background",
    "texture",
    "camera",
)


@dataclass(frozen=True)
class TrainingSettings:
    """Everything that determines a training run (stored with the checkpoint, so it can be reproduced).

    VAE phase: ``steps_vae`` steps of ``vae_batch_size`` single-frame ``vae_crop`` crops (0: whole frames) at
    ``vae_lr``, with ``vae_kl_weight`` on the KL term. Transformer phase: latents of ``num_videos`` renders, a bank of
    ``phrasings`` prompts per video and direction, ``steps_transformer`` steps of ``batch_size`` at ``lr`` (AdamW,
    ``warmup_steps`` then cosine, ``weight_decay``, ``grad_clip``, EMA ``ema_decay``), ``caption_dropout`` empty
    prompts and noise levels shifted by ``timestep_shift``.
    """

    steps_vae: int = 1000
    steps_transformer: int = 5000
    seed: int = 0
    vae_batch_size: int = 16
    vae_crop: int = 32
    vae_lr: float = 2e-3
    vae_kl_weight: float = 1e-4
    num_videos: int = 3000
    phrasings: int = 2
    batch_size: int = 8
    lr: float = 2e-3
    warmup_steps: int = 200
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    timestep_shift: float = 3.0
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        for name in ("steps_vae", "steps_transformer", "warmup_steps", "vae_crop"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"training setting {name} must be a non-negative integer, got {value!r}")
        for name in ("vae_batch_size", "num_videos", "phrasings", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"training setting {name} must be a positive integer, got {value!r}")
        for name in ("vae_lr", "lr", "timestep_shift"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"training setting {name} must be positive, got {getattr(self, name)!r}")
        for name in ("ema_decay", "caption_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"training setting {name} must be in [0, 1), got {getattr(self, name)!r}")


# ----------------------------------------------------------------------------------------------------------------
# Shared pieces


#: The warning WanPipeline logs on every call when the VAE does not compress time (``num_frames % 1 != 1``).
UNIT_ROUNDING_WARNING = "`num_frames - 1` has to be divisible by 1."


class UnitRoundingFilter(logging.Filter):
    """Drops WanPipeline's frame-rounding warning for a temporal factor of 1, where it fires on every call.

    With that factor the rounding always adds exactly one frame (which :data:`TOY_GENERATOR_CALL` accounts for), so
    the warning says nothing; warnings for any other factor still pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(UNIT_ROUNDING_WARNING)


def _quiet_unit_rounding() -> None:
    """Install :class:`UnitRoundingFilter` on diffusers' Wan pipeline logger, once."""
    wan_logger = logging.getLogger(WanPipeline.__module__)
    if not any(isinstance(f, UnitRoundingFilter) for f in wan_logger.filters):
        wan_logger.addFilter(UnitRoundingFilter())


def build_toy_generator(seed: int = 0) -> WanPipeline:
    """The generator's architecture with fresh seeded weights (the random-init baseline, and training's start)."""
    _quiet_unit_rounding()
    return build_video_pipeline("wan2.1", seed, overrides=TOY_GENERATOR_OVERRIDES)


def make_per_frame(vae: torch.nn.Module) -> None:
    """Zero the past-frame taps of every causal 3D convolution, so each frame is encoded and decoded on its own.

    With no temporal down/upsampling, AutoencoderKLWan mixes frames only through its causal convolutions' taps on
    the two previous frames; without them, a video's latents are exactly its frames' latents, which is what training
    on single frames teaches.
    """
    with torch.no_grad():
        for module in vae.modules():
            if isinstance(module, torch.nn.Conv3d) and module.kernel_size[0] > 1:
                module.weight[:, :, :-1].zero_()


def _to_model_range(frames: np.ndarray) -> torch.Tensor:
    """Frames (..., 3, H, W) in [0, 1] as a tensor in the VAE's [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32)) * 2.0 - 1.0


def _cosine_lr(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then a cosine decay to zero: the learning-rate multiplier at ``step``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _optimizer(params: Sequence[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay)


# ----------------------------------------------------------------------------------------------------------------
# Phase 1: the VAE


def _object_pixels(scene: Scene, frame: int) -> list[tuple[float, float]]:
    """Pixel centres of a scene's objects in one frame."""
    out = []
    for (cx, cy), obj in zip(scene.centers, scene.spec.objects):
        dx, dy = object_path(obj.motion, scene.spec.camera, WORLD)[frame]
        out.append((cx * WORLD.width + dx, cy * WORLD.height + dy))
    return out


def _background_distance(frames: np.ndarray, scenes: Sequence[Scene]) -> np.ndarray:
    """Distance (B, H, W) of every pixel of frames (B, 3, H, W) from the segment between its scene's two background
    tones: near zero on the background (textured or not), large on objects."""
    tones = np.array([BACKGROUND_COLORS[s.spec.background] for s in scenes], dtype=np.float32)  # (B, 2, 3)
    base, axis = tones[:, 0, :, None, None], (tones[:, 1] - tones[:, 0])[:, :, None, None]
    rel = frames - base
    alpha = np.clip((rel * axis).sum(1, keepdims=True) / (axis * axis).sum(1, keepdims=True), 0.0, 1.0)
    return np.linalg.norm(rel - alpha * axis, axis=1)


def vae_batch(rng: np.random.Generator, batch_size: int, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Single frames (B, 3, 1, crop, crop) in [-1, 1] of fresh clean renders and per-pixel loss weights (B, 1, 1, crop,
    crop). Half of the crops are centred (with jitter) on an object, half placed anywhere; object pixels weigh
    ``1 + OBJECT_PIXEL_WEIGHT`` times as much as background ones, since objects cover a few percent of a frame."""
    scenes = [sample_scene(rng, WORLD) for _ in range(batch_size)]
    videos = render(scenes, WORLD)
    picks = rng.integers(WORLD.num_frames, size=batch_size)
    frames = videos[np.arange(batch_size), picks]  # (B, 3, H, W)
    weights = 1.0 + OBJECT_PIXEL_WEIGHT * (_background_distance(frames, scenes) > OBJECT_PIXEL_DISTANCE)
    crop = min(crop, WORLD.height, WORLD.width) if crop else min(WORLD.height, WORLD.width)
    out, out_w = [], []
    for frame, weight, scene, pick in zip(frames, weights, scenes, picks):
        objects = _object_pixels(scene, int(pick))
        if rng.random() < 0.5:
            x, y = objects[int(rng.integers(len(objects)))]
            x0, y0 = (
                x - crop / 2 + rng.uniform(-crop / 4, crop / 4),
                y - crop / 2 + rng.uniform(-crop / 4, crop / 4),
            )
        else:
            x0, y0 = rng.uniform(0, WORLD.width - crop), rng.uniform(0, WORLD.height - crop)
        left = int(np.clip(round(x0), 0, WORLD.width - crop))
        top = int(np.clip(round(y0), 0, WORLD.height - crop))
        out.append(frame[:, top : top + crop, left : left + crop])
        out_w.append(weight[top : top + crop, left : left + crop])
    frames_t = _to_model_range(np.stack(out))[:, :, None]
    weights_t = torch.from_numpy(np.stack(out_w).astype(np.float32))[:, None, None]
    return frames_t, weights_t


def train_vae(
    vae: torch.nn.Module,
    settings: TrainingSettings,
    rng: np.random.Generator,
    generator: torch.Generator,
    *,
    progress: bool = True,
) -> list[float]:
    """Train the per-frame VAE on single frames (crops) of freshly rendered clean toy videos with an object-weighted
    L1 + MSE loss and a small KL term; returns the reconstruction loss per step.

    The VAE is fully convolutional apart from one attention block on its smallest feature map, so it is trained on
    crops (cheaper per example, and centred on the objects half of the time) and used on whole frames.
    """
    make_per_frame(vae)
    vae.train()
    params = [p for p in vae.parameters() if p.requires_grad]
    optimizer = _optimizer(params, settings.vae_lr, 0.0)
    losses = []
    warmup = min(settings.warmup_steps, max(1, settings.steps_vae // 10))
    for step in tqdm(range(settings.steps_vae), desc="toy generator: VAE", disable=not progress):
        for group in optimizer.param_groups:
            group["lr"] = settings.vae_lr * _cosine_lr(step, settings.steps_vae, warmup)
        frames, weights = vae_batch(rng, settings.vae_batch_size, settings.vae_crop)
        posterior = vae.encode(frames).latent_dist
        recon = vae.decode(posterior.sample(generator=generator)).sample
        error = recon - frames
        # Pixel L1 + MSE, plus L1 on the horizontal and vertical differences, which keeps edges sharp.
        edges = (error.diff(dim=-1).abs() * weights[..., 1:]).mean() + (
            error.diff(dim=-2).abs() * weights[..., 1:, :]
        ).mean()
        reconstruction = (((error.abs() + error.pow(2)) * weights).mean() + edges) / weights.mean()
        kl = 0.5 * (posterior.mean.pow(2) + posterior.var - 1.0 - posterior.logvar).mean()
        loss = reconstruction + settings.vae_kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
        make_per_frame(vae)
        losses.append(reconstruction.item())
    vae.eval()
    return losses


@torch.no_grad()
def encode_videos(
    vae: torch.nn.Module, videos: np.ndarray, *, batch_size: int = 16, progress: bool = False
) -> torch.Tensor:
    """Posterior means (N, z, T, h, w) of videos (N, T, 3, H, W) in [0, 1], unnormalised."""
    out = []
    for start in tqdm(range(0, len(videos), batch_size), desc="toy generator: encode", disable=not progress):
        chunk = _to_model_range(videos[start : start + batch_size]).permute(0, 2, 1, 3, 4)
        out.append(vae.encode(chunk).latent_dist.mean)
    return torch.cat(out)


def set_latent_statistics(vae: torch.nn.Module, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Store per-channel mean and std of ``latents`` (N, z, ...) in the VAE config, where WanPipeline reads them."""
    dims = [0] + list(range(2, latents.ndim))
    mean, std = latents.mean(dim=dims), latents.std(dim=dims).clamp_min(1e-6)
    vae.register_to_config(latents_mean=[float(v) for v in mean], latents_std=[float(v) for v in std])
    shape = (1, -1) + (1,) * (latents.ndim - 2)
    return mean.view(shape), std.view(shape)


# ----------------------------------------------------------------------------------------------------------------
# Phase 2: the transformer


def encode_prompts(pipe: WanPipeline, prompts: Sequence[str]) -> torch.Tensor:
    """Prompt embeddings exactly as WanPipeline computes them for a call with :data:`MAX_SEQUENCE_LENGTH`."""
    with torch.no_grad():
        embeds, _ = pipe.encode_prompt(
            list(prompts),
            do_classifier_free_guidance=False,
            max_sequence_length=MAX_SEQUENCE_LENGTH,
            device="cpu",
        )
    return embeds


_REVERSED_MOTION = {"left": "right", "right": "left", "up": "down", "down": "up", "still": "still"}
_REVERSED_CAMERA = {None: None, "static": "static", "pan_left": "pan_right", "pan_right": "pan_left"}


def reverse_spec(spec: SceneSpec) -> SceneSpec:
    """What a clean toy video played backwards shows: every motion and pan reversed.

    Paths are symmetric about mid-clip, so the reversed frames are exactly the render of the reversed scene; with a
    per-frame VAE their latents are the original latents reversed in time, which doubles the training data for free.
    """
    objects = tuple(dataclasses.replace(o, motion=_REVERSED_MOTION[o.motion]) for o in spec.objects)
    return dataclasses.replace(spec, objects=objects, camera=_REVERSED_CAMERA[spec.camera])


def prompt_bank(
    pipe: WanPipeline,
    specs: Sequence[SceneSpec],
    phrasings: int,
    rng: np.random.Generator,
    *,
    batch_size: int = 64,
    progress: bool = False,
) -> torch.Tensor:
    """Embeddings (N, 2, phrasings, L, D) of freshly phrased prompts for every spec played forwards and backwards,
    cut to the longest prompt's L tokens (the rest of :data:`MAX_SEQUENCE_LENGTH` is zero padding)."""
    prompts = [
        write_prompt(spec, rng)
        for forward in specs
        for spec in (forward, reverse_spec(forward))
        for _ in range(phrasings)
    ]
    chunks = []
    for start in tqdm(
        range(0, len(prompts), batch_size), desc="toy generator: prompts", disable=not progress
    ):
        chunks.append(encode_prompts(pipe, prompts[start : start + batch_size]))
    embeds = torch.cat(chunks)
    used = int((embeds.abs().amax(dim=(0, 2)) > 0).nonzero().max()) + 1
    return embeds[:, :used].reshape(len(specs), 2, phrasings, used, -1).clone()


def sample_noise_levels(batch: int, shift: float, generator: torch.Generator) -> torch.Tensor:
    """Noise levels s in (0, 1): logit-normal, then shifted towards noise as the sampler's flow shift does."""
    u = torch.sigmoid(torch.randn(batch, generator=generator))
    return shift * u / (1.0 + (shift - 1.0) * u)


def train_transformer(
    pipe: WanPipeline,
    latents: torch.Tensor,
    prompts: torch.Tensor,
    settings: TrainingSettings,
    rng: np.random.Generator,
    generator: torch.Generator,
    *,
    progress: bool = True,
) -> list[float]:
    """Rectified-flow training of ``pipe.transformer`` on normalised latents (N, z, T, h, w) and their
    :func:`prompt_bank`; each example is played forwards or backwards at random. Leaves the EMA weights in place."""
    transformer = pipe.transformer
    transformer.train()
    params = [p for p in transformer.parameters() if p.requires_grad]
    ema = [p.detach().clone() for p in params]
    optimizer = _optimizer(params, settings.lr, settings.weight_decay)
    empty = encode_prompts(pipe, [""])[0]  # what the pipeline feeds the unconditional branch
    losses = []
    steps = settings.steps_transformer
    bar = tqdm(range(steps), desc="toy generator: transformer", disable=not progress)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = settings.lr * _cosine_lr(step, steps, settings.warmup_steps)
        index = torch.from_numpy(rng.integers(len(latents), size=settings.batch_size))
        backwards = torch.from_numpy(rng.random(settings.batch_size) < 0.5)
        phrasing = torch.from_numpy(rng.integers(prompts.shape[2], size=settings.batch_size))
        dropped = torch.from_numpy(rng.random(settings.batch_size) < settings.caption_dropout)
        embeds = empty.repeat(settings.batch_size, 1, 1)
        embeds[:, : prompts.shape[3]] = prompts[index, backwards.long(), phrasing]
        embeds[dropped] = empty
        x0 = latents[index]
        x0[backwards] = x0[backwards].flip(2)
        noise = torch.randn(x0.shape, generator=generator)
        s = sample_noise_levels(settings.batch_size, settings.timestep_shift, generator)
        s_ = s.view(-1, 1, 1, 1, 1)
        noisy = (1.0 - s_) * x0 + s_ * noise
        pred = transformer(
            hidden_states=noisy, timestep=s * 1000.0, encoder_hidden_states=embeds, return_dict=False
        )[0]
        loss = (pred - (noise - x0)).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
        decay = min(settings.ema_decay, (1.0 + step) / (10.0 + step))
        with torch.no_grad():
            for shadow, p in zip(ema, params):
                shadow.lerp_(p.detach(), 1.0 - decay)
        losses.append(loss.item())
        if (step + 1) % max(1, steps // 10) == 0:
            recent = float(np.mean(losses[-max(1, steps // 10) :]))
            bar.set_postfix(loss=f"{recent:.4f}")
            logger.info("transformer step %d/%d: loss %.4f", step + 1, steps, recent)
    with torch.no_grad():
        for shadow, p in zip(ema, params):
            p.copy_(shadow)
    transformer.eval()
    return losses


# ----------------------------------------------------------------------------------------------------------------
# The whole recipe


def train_toy_generator(
    out_dir: str | Path,
    *,
    steps_vae: int = TrainingSettings.steps_vae,
    steps_transformer: int = TrainingSettings.steps_transformer,
    seed: int = 0,
    vae_from: str | Path | None = None,
    progress: bool = True,
    **settings: Any,
) -> Path:
    """Train the toy generator from scratch and save it as a WanPipeline (safetensors) in ``out_dir``.

    ``vae_from`` reuses the VAE of an earlier run's checkpoint (phase 1 is skipped; the VAE is trained once).
    Other keyword arguments override :class:`TrainingSettings` fields. Same settings and seed, same weights.
    """
    unknown = sorted(set(settings) - {f for f in TrainingSettings.__dataclass_fields__})
    if unknown:
        raise ConfigError(f"train_toy_generator: unknown training setting(s) {unknown}")
    config = TrainingSettings(steps_vae=steps_vae, steps_transformer=steps_transformer, seed=seed, **settings)
    out_dir = Path(out_dir)
    pipe = build_toy_generator(config.seed)
    record: dict[str, Any] = {"settings": asdict(config), "world": asdict(WORLD), "call": TOY_GENERATOR_CALL}

    clock = _PhaseClock()
    if vae_from is not None:
        pipe.vae = load_toy_generator(vae_from).vae
        record["vae_from"] = str(vae_from)
        vae_losses: list[float] = []
    else:
        rng, generator = _phase_randomness(config.seed, 1)
        vae_losses = train_vae(pipe.vae, config, rng, generator, progress=progress)
    clock.lap("vae")

    # Phase 2 draws from its own seeded streams, so reusing a VAE trained with the same settings (vae_from) gives
    # exactly the weights of a full run.
    rng, generator = _phase_randomness(config.seed, 2)
    scenes = [sample_scene(rng, WORLD) for _ in range(config.num_videos)]
    latents = encode_videos(pipe.vae, render(scenes, WORLD), progress=progress)
    mean, std = set_latent_statistics(pipe.vae, latents)
    latents = (latents - mean) / std
    prompts = prompt_bank(pipe, [s.spec for s in scenes], config.phrasings, rng, progress=progress)
    clock.lap("encode")
    transformer_losses = train_transformer(pipe, latents, prompts, config, rng, generator, progress=progress)
    clock.lap("transformer")

    pipe.save_pretrained(out_dir, safe_serialization=True)
    record["timings"] = clock.timings
    record["losses"] = {
        "vae_reconstruction_last100": _tail_mean(vae_losses),
        "transformer_last100": _tail_mean(transformer_losses),
        "vae_curve": _curve(vae_losses),
        "transformer_curve": _curve(transformer_losses),
    }
    (out_dir / TRAINING_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    logger.info("toy generator saved to %s (%s)", out_dir, record["timings"])
    return out_dir


class _PhaseClock:
    """Wall-clock and CPU seconds of each training phase (CPU time is what the budget counts on a shared machine)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def lap(self, phase: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.timings[f"{phase}_wall_s"] = round(wall - self._wall, 1)
        self.timings[f"{phase}_cpu_s"] = round(cpu - self._cpu, 1)
        self._wall, self._cpu = wall, cpu


def _phase_randomness(seed: int, phase: int) -> tuple[np.random.Generator, torch.Generator]:
    """The numpy and torch random streams of one training phase."""
    return np.random.default_rng([seed, phase]), torch.Generator().manual_seed(seed * 1_000_003 + phase)


def _tail_mean(values: Sequence[float], n: int = 100) -> float | None:
    return round(float(np.mean(values[-n:])), 5) if len(values) else None


def _curve(values: Sequence[float], points: int = 10) -> list[float]:
    """Mean loss over each tenth of training."""
    return [
        round(float(np.mean(chunk)), 5) for chunk in np.array_split(np.asarray(values), points) if len(chunk)
    ]


def load_toy_generator(path: str | Path | None = None) -> WanPipeline:
    """The toy generator (the shipped checkpoint by default), loaded offline; call it with :data:`TOY_GENERATOR_CALL`."""
    path = Path(path) if path is not None else DEFAULT_CHECKPOINT
    if not (path / "model_index.json").is_file():
        raise CheckpointError(f"{path}: not a toy generator checkpoint (no model_index.json)")
    try:
        pipe = WanPipeline.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"{path}: cannot load the toy generator ({type(err).__name__}: {err})") from err
    pipe.set_progress_bar_config(disable=True)
    _quiet_unit_rounding()
    return pipe


# ----------------------------------------------------------------------------------------------------------------
# Evaluation


@dataclass(frozen=True)
class GeneratorEvaluation:
    """Prompt agreement of a generator, measured by the analyzer from the pixels of its videos.

    ``agreement`` maps each of :data:`AGREEMENT_KEYS` to the share of requested objects (colour, shape, size,
    motion, intact) or videos (background, texture, camera) that match the prompt, each analyzer dimension to the
    share of videos where it scores 2, and ``overall`` to the mean analyzer overall score (1-5). ``chance`` holds
    the same measurements against the prompt of another video of the batch (a fixed derangement): what agreement
    looks like when the video ignores its prompt.
    """

    agreement: dict[str, float]
    chance: dict[str, float]
    num_videos: int
    seconds_per_video: float
    overall_scores: tuple[float, ...] = field(default_factory=tuple)


def _object_agreement(spec: SceneSpec, objects: Sequence[DetectedObject]) -> dict[str, list[float]]:
    by_color = {d.color: d for d in objects}
    out: dict[str, list[float]] = {k: [] for k in ("colour", "shape", "size", "motion", "intact")}
    for obj in spec.objects:
        det = by_color.get(obj.color)
        out["colour"].append(float(det is not None))
        out["shape"].append(float(det is not None and not det.split and det.shape == obj.shape))
        if obj.size is not None:
            out["size"].append(float(det is not None and det.size == obj.size))
        out["motion"].append(float(det is not None and det.motion == obj.motion))
        out["intact"].append(float(det is not None and not det.split and det.fragments < 0.5))
    return out


def _agreement(
    specs: Sequence[SceneSpec], measured: Sequence[tuple[dict[str, Any], tuple[DetectedObject, ...]]]
) -> tuple[dict[str, float], list[float]]:
    pools: dict[str, list[float]] = {k: [] for k in AGREEMENT_KEYS + DIMENSIONS}
    overall = []
    for spec, (measurements, objects) in zip(specs, measured):
        for key, values in _object_agreement(spec, objects).items():
            pools[key].extend(values)
        pools["background"].append(float(measurements["background"] == spec.background))
        pools["texture"].append(float(measurements["texture"] == spec.texture))
        if spec.camera is not None:
            pools["camera"].append(float(measurements["camera"] == spec.camera))
        subscores, _ = score(spec, measurements, objects)
        for dim, value in subscores.items():
            if value is not None:
                pools[dim].append(float(value == 2))
        overall.append(overall_from_subscores(subscores))
    result = {k: float(np.mean(v)) if v else float("nan") for k, v in pools.items()}
    result["overall"] = float(np.mean(overall))
    return result, overall


def generate_videos(
    pipe: WanPipeline, prompts: Sequence[str], seeds: Sequence[int], *, batch_size: int = 8, **call: Any
) -> np.ndarray:
    """Videos (N, T, 3, H, W) in [0, 1] for each (prompt, seed), generated with :data:`TOY_GENERATOR_CALL` updated
    by ``call``. Each video depends only on its own prompt and seed, not on the batch it was generated in."""
    if len(prompts) != len(seeds):
        raise ConfigError(f"generate_videos: {len(prompts)} prompts but {len(seeds)} seeds")
    settings = {**TOY_GENERATOR_CALL, **call}
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds[start : start + batch_size]]
        with torch.no_grad():
            frames = pipe(chunk, generator=generators, output_type="pt", **settings).frames
        out.append(frames.float().clamp(0.0, 1.0).numpy())
    return np.concatenate(out)


def evaluate_generator(
    pipe: WanPipeline, prompts: Sequence[str], seeds: Sequence[int], *, batch_size: int = 8, **call: Any
) -> GeneratorEvaluation:
    """Generate one video per (prompt, seed) and measure its agreement with the prompt with the toy analyzer."""
    if len(prompts) < 2:
        raise ConfigError(
            "evaluate_generator needs at least 2 prompts (chance is measured against another prompt)"
        )
    specs = [parse_prompt(p) for p in prompts]
    start = time.perf_counter()
    videos = generate_videos(pipe, prompts, seeds, batch_size=batch_size, **call)
    seconds = (time.perf_counter() - start) / len(prompts)
    measured = [measure(v) for v in videos]
    agreement, overall = _agreement(specs, measured)
    chance, _ = _agreement(specs[1:] + specs[:1], measured)
    return GeneratorEvaluation(agreement, chance, len(prompts), seconds, tuple(overall))


def toy_prompts(n: int, seed: int) -> list[str]:
    """``n`` toy-world prompts of the training distribution, drawn from their own seed."""
    rng = np.random.default_rng(seed)
    return [write_prompt(sample_scene(rng, WORLD).spec, rng) for _ in range(n)]


# ----------------------------------------------------------------------------------------------------------------
# Command line


def add_generator_commands(toy_subparsers: argparse._SubParsersAction) -> None:
    """Add ``train-generator`` and ``eval-generator`` to the ``descore toy`` command group."""
    defaults = TrainingSettings()
    p = toy_subparsers.add_parser(
        "train-generator",
        help="train the toy text-to-video generator (a tiny Wan2.1) from scratch",
        description="Train the toy generator in two phases (per-frame VAE, then the transformer with rectified "
        "flow) on clean toy-world renders and save it as a WanPipeline. The defaults reproduce the shipped "
        "checkpoint (about 21 minutes of CPU time on one thread).",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder for the pipeline")
    p.add_argument("--steps-vae", type=int, default=defaults.steps_vae, help="VAE training steps")
    p.add_argument(
        "--steps",
        "--steps-transformer",
        dest="steps_transformer",
        type=int,
        default=defaults.steps_transformer,
        help="transformer training steps",
    )
    p.add_argument(
        "--seed", type=int, default=defaults.seed, help="seed of the initial weights and of all training data"
    )
    p.add_argument(
        "--videos",
        dest="num_videos",
        type=int,
        default=defaults.num_videos,
        help="rendered videos whose latents the transformer trains on",
    )
    p.add_argument(
        "--vae-from", type=Path, default=None, help="reuse the VAE of this checkpoint (skips phase 1)"
    )
    p.add_argument("--eval-prompts", type=int, default=64, help="prompts to evaluate on afterwards (0: skip)")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest for these tiny models)"
    )
    p.set_defaults(func=_run_train)

    p = toy_subparsers.add_parser(
        "eval-generator", help="measure a toy generator's prompt agreement with the analyzer"
    )
    p.add_argument("--model", type=Path, default=None, help="checkpoint folder (default: the shipped one)")
    p.add_argument(
        "--random-init", action="store_true", help="evaluate the same architecture with random weights"
    )
    p.add_argument("--prompts", type=int, default=64, help="number of toy prompts")
    p.add_argument("--seed", type=int, default=1234, help="seed of the prompts and of the sampling noise")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print the evaluation as JSON")
    p.set_defaults(func=_run_eval)


def _print_evaluation(evaluation: GeneratorEvaluation, as_json: bool) -> None:
    if as_json:
        payload = asdict(evaluation)
        payload.pop("overall_scores")
        print(json.dumps(payload, indent=2))
        return
    print(f"{evaluation.num_videos} videos, {evaluation.seconds_per_video:.2f} s per video")
    print(f"{'':>12}  {'agreement':>9}  {'chance':>7}")
    for key, value in evaluation.agreement.items():
        print(f"{key:>12}  {value:9.3f}  {evaluation.chance[key]:7.3f}")


def _run_eval(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    pipe = build_toy_generator(args.seed) if args.random_init else load_toy_generator(args.model)
    prompts = toy_prompts(args.prompts, args.seed)
    seeds = [args.seed + i for i in range(len(prompts))]
    _print_evaluation(evaluate_generator(pipe, prompts, seeds), args.json)
    return 0


def _run_train(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    out = train_toy_generator(
        args.out,
        steps_vae=args.steps_vae,
        steps_transformer=args.steps_transformer,
        seed=args.seed,
        vae_from=args.vae_from,
        num_videos=args.num_videos,
    )
    print(f"saved the toy generator to {out}")
    if args.eval_prompts:
        prompts = toy_prompts(args.eval_prompts, seed=1234)
        evaluation = evaluate_generator(
            load_toy_generator(out), prompts, [1234 + i for i in range(len(prompts))]
        )
        _print_evaluation(evaluation, as_json=False)
    return 0


__all__ = [
    "AGREEMENT_KEYS",
    "DEFAULT_CHECKPOINT",
    "MAX_SEQUENCE_LENGTH",
    "TOY_GENERATOR_CALL",
    "TOY_GENERATOR_OVERRIDES",
    "GeneratorEvaluation",
    "TrainingSettings",
    "add_generator_commands",
    "build_toy_generator",
    "evaluate_generator",
    "generate_videos",
    "load_toy_generator",
    "toy_prompts",
    "train_toy_generator",
]
