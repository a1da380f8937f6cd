"""Latents as a pipeline holds them -> videos (B, F, C, H, W) in [0, 1], per model family, with gradients on demand.

Each decoder replays what its pipeline's ``__call__`` does after the denoising loop (so that decoding the latents
of ``output_type="latent"`` gives the frames of ``output_type="pt"``):

- Wan 2.1 / 2.2: (B, C, T, h, w) latents normalised per channel -> ``z * latents_std + latents_mean``.
- CogVideoX: frame-first (B, T, C, h, w) -> channel-first, divided by the VAE's scaling factor.
- LTX: packed tokens (B, S, D) -> unpacked to (B, C, T, h, w) with the transformer's patch sizes and the latent grid,
  denormalised with the VAE's per-channel statistics and scaling factor; VAEs with timestep conditioning get the
  decode timestep (and, when asked, the decode noise) the pipeline would give them.
- HunyuanVideo: (B, C, T, h, w) divided by the VAE's scaling factor.

Then ``vae.decode`` and the pipelines' own post-processing, ``(x / 2 + 0.5).clamp(0, 1)``, frames first.

Memory knobs: ``frames`` decodes only what a frame subset needs: the Wan VAE is causal (a prefix of latent frames
decodes exactly to the first pixel frames of the whole clip), so a subset costs the latent prefix that covers its
last frame; the other VAEs normalise and attend over the whole clip, so they decode every frame and then select (still
saving the reward's work). ``slicing`` / ``tiling`` set the VAE's own batch slicing and spatial tiling for the call.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from diffusers import LTXPipeline
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.torch_utils import randn_tensor

from descore.errors import ConfigError
from reward_guidance.scoped import frozen, vae_memory

FrameSubset = int | Sequence[int] | None
"""None: every frame; an int K: the first K frames; a sequence: those frame indices, strictly increasing."""


def frame_subset(frames: FrameSubset, num_frames: int) -> list[int] | None:
    """Validate a frame subset against a ``num_frames``-frame video; None means every frame."""
    if frames is None:
        return None
    if isinstance(frames, bool):
        raise ConfigError(f"frames must be None, a count or a list of frame indices, got {frames!r}")
    if isinstance(frames, int):
        if not 1 <= frames <= num_frames:
            raise ConfigError(
                f"frames={frames}: a frame count must lie in 1..{num_frames} (the video has {num_frames})"
            )
        return list(range(frames))
    indices = [int(k) for k in frames]
    if not indices:
        raise ConfigError("frames is an empty list; pass None for every frame or at least one index")
    if any(b <= a for a, b in itertools.pairwise(indices)):
        raise ConfigError(f"frames {indices} must be strictly increasing frame indices")
    if indices[0] < 0 or indices[-1] >= num_frames:
        raise ConfigError(
            f"frames {indices}: indices must lie in 0..{num_frames - 1} (the video has {num_frames})"
        )
    return indices


def subset_fps(indices: list[int] | None, fps: float | None) -> float | None:
    """Frame rate of a frame subset: ``fps / step`` for evenly spaced frames, None (unknown) otherwise."""
    if indices is None or fps is None or len(indices) < 2:
        return fps
    steps = {b - a for a, b in itertools.pairwise(indices)}
    return fps / steps.pop() if len(steps) == 1 else None


class LatentDecoder(ABC):
    """Decode one pipeline family's latents into (B, F, C, H, W) frames in [0, 1]."""

    causal: ClassVar[bool] = False
    """True when decoding the first L latent frames gives exactly the first pixel frames of the whole decode."""

    def __init__(self, pipe: Any):
        self.pipe = pipe
        self.vae = pipe.vae

    @property
    @abstractmethod
    def temporal_compression(self) -> int:
        """Pixel frames per latent frame (after the first, which decodes to one frame)."""

    @abstractmethod
    def latent_frames(self, latents: torch.Tensor, grid: tuple[int, int, int] | None) -> int:
        """Number of latent frames T in ``latents``."""

    @abstractmethod
    def vae_latents(self, latents: torch.Tensor, grid: tuple[int, int, int] | None) -> torch.Tensor:
        """The VAE's input (B, C, T, h, w): the pipeline's latents unpacked and denormalised."""

    def run_vae(self, z: torch.Tensor) -> torch.Tensor:
        """(B, 3, F, H, W) in about [-1, 1]."""
        return self.vae.decode(z, return_dict=False)[0]

    def pixel_frames(self, latent_frames: int) -> int:
        """Pixel frames ``latent_frames`` latent frames decode to: ``(T - 1) * compression + 1``."""
        return (latent_frames - 1) * self.temporal_compression + 1

    def num_frames(self, latents: torch.Tensor, grid: tuple[int, int, int] | None = None) -> int:
        """Pixel frames the latents decode to (:meth:`pixel_frames` of their latent frames)."""
        return self.pixel_frames(self.latent_frames(latents, grid))

    def __call__(
        self,
        latents: torch.Tensor,
        *,
        frames: FrameSubset = None,
        grad: bool = False,
        grid: tuple[int, int, int] | None = None,
        slicing: bool | None = None,
        tiling: bool | dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """Frames (B, F', C, H, W) in [0, 1]; F' is the subset size when ``frames`` is given.

        ``grad``: keep the graph back to ``latents``; the VAE's weights are frozen while it is built, so a backward
        pass never fills their ``.grad``. Gradient checkpointing of the VAE recomputes its blocks in the backward
        pass, which must see the same module state as the forward: keep both the VAE frozen and its checkpointing on
        until the backward is done (``scoped.frozen`` and ``scoped.gradient_checkpointing`` around both, as guidance
        does).
        ``grid``: (latent frames, latent height, latent width), needed for LTX's packed latents.
        """
        indices = frame_subset(frames, self.num_frames(latents, grid))
        with torch.enable_grad() if grad else torch.no_grad():
            z = self.vae_latents(latents, grid)
            if indices is not None and self.causal:
                last = indices[-1]
                needed = 1 if last == 0 else (last - 1) // self.temporal_compression + 2
                z = z[:, :, :needed]
            with frozen([self.vae] if grad else []), vae_memory(self.vae, slicing, tiling):
                video = self.run_vae(z)
            video = VaeImageProcessor.denormalize(video.float()).permute(0, 2, 1, 3, 4)
            return video if indices is None else video[:, indices]


class WanDecoder(LatentDecoder):
    """Wan 2.1 / 2.2: per-channel latent statistics; a causal VAE decoded frame by frame."""

    causal = True

    @property
    def temporal_compression(self) -> int:
        return int(self.pipe.vae_scale_factor_temporal)

    def latent_frames(self, latents: torch.Tensor, grid: tuple[int, int, int] | None) -> int:
        return int(latents.shape[2])

    def vae_latents(self, latents: torch.Tensor, grid: tuple[int, int, int] | None) -> torch.Tensor:
        config = self.vae.config
        latents = latents.to(self.vae.device, dtype=self.vae.dtype)
        mean = (
            torch.tensor(config.latents_mean).view(1, config.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
        )
        inverse_std = 1.0 / torch.tensor(config.latents_std).view(1, config.z_dim, 1, 1, 1).to(
            latents.device, latents.dtype
        )
        return latents / inverse_std + mean  # as WanPipeline writes it, so the frames match bit for bit


class CogVideoXDecoder(LatentDecoder):
    """CogVideoX: frame-first latents scaled by the VAE's scaling factor.

    CogVideoX 1.5 (temporal patching) pads latent frames at the start when their count is not a multiple of the
    patch size; the pipeline drops them after the loop, these decoders see the latents the loop holds and keep them.
    """

    @property
    def temporal_compression(self) -> int:
        return int(self.pipe.vae_scale_factor_temporal)

    def latent_frames(self, latents: torch.Tensor, grid: tuple[int, int, int] | None) -> int:
        return int(latents.shape[1])

    def vae_latents(self, latents: torch.Tensor, grid: tuple[int, int, int] | None) -> torch.Tensor:
        latents = latents.to(self.vae.device, dtype=self.vae.dtype).permute(0, 2, 1, 3, 4)
        return 1 / self.pipe.vae_scaling_factor_image * latents

    def run_vae(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z).sample

    def pixel_frames(self, latent_frames: int) -> int:
        """The VAE decodes latent frames in batches of ``num_latent_frames_batch_size`` (the first batch also takes
        the remainder); each temporal upsampling keeps the first frame of an odd batch and doubles the rest, so an
        odd batch of T decodes to ``(T - 1) * compression + 1`` frames and an even one to ``T * compression``
        (2 latent frames give 8 frames, not 5)."""
        size = self.vae.num_latent_frames_batch_size
        batches = max(latent_frames // size, 1)
        first = latent_frames - size * (batches - 1)
        return sum(
            (t - 1) * self.temporal_compression + 1 if t % 2 else t * self.temporal_compression
            for t in [first] + [size] * (batches - 1)
        )


class LTXDecoder(LatentDecoder):
    """LTX-Video: packed tokens, per-channel statistics, optional timestep-conditioned decoder.

    ``decode_timestep`` / ``decode_noise_scale`` / ``generator`` are the pipeline's arguments of the same names (used
    only by VAEs with ``timestep_conditioning``); a noise scale of 0 decodes the latents as they are.
    """

    def __init__(
        self,
        pipe: Any,
        decode_timestep: float = 0.0,
        decode_noise_scale: float | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__(pipe)
        self.decode_timestep = float(decode_timestep)
        self.decode_noise_scale = (
            self.decode_timestep if decode_noise_scale is None else float(decode_noise_scale)
        )
        self.generator = generator

    @property
    def temporal_compression(self) -> int:
        return int(self.pipe.vae_temporal_compression_ratio)

    def latent_frames(self, latents: torch.Tensor, grid: tuple[int, int, int] | None) -> int:
        return self._grid(latents, grid)[0]

    def _grid(self, latents: torch.Tensor, grid: tuple[int, int, int] | None) -> tuple[int, int, int]:
        if latents.ndim != 3:
            raise ConfigError(
                f"LTX latents must be packed (B, S, D) as LTXPipeline holds them, got shape {tuple(latents.shape)}"
            )
        if grid is None:
            raise ConfigError(
                "LTX latents are packed (B, S, D): pass grid=(latent_frames, latent_height, latent_width), i.e. "
                "((num_frames - 1) // temporal_ratio + 1, height // spatial_ratio, width // spatial_ratio)"
            )
        frames, height, width = (int(v) for v in grid)
        p, pt = self.pipe.transformer_spatial_patch_size, self.pipe.transformer_temporal_patch_size
        tokens = (frames // pt) * (height // p) * (width // p)
        if tokens != latents.shape[1]:
            raise ConfigError(
                f"LTX grid {tuple(grid)} with patch sizes ({pt}, {p}, {p}) makes {tokens} tokens, but the latents "
                f"hold {latents.shape[1]}"
            )
        return frames, height, width

    def vae_latents(self, latents: torch.Tensor, grid: tuple[int, int, int] | None) -> torch.Tensor:
        frames, height, width = self._grid(latents, grid)
        # LTXPipeline's own (static) unpacking and denormalisation, so the layout can never drift from the pipeline.
        z = LTXPipeline._unpack_latents(
            latents,
            frames,
            height,
            width,
            self.pipe.transformer_spatial_patch_size,
            self.pipe.transformer_temporal_patch_size,
        )
        z = LTXPipeline._denormalize_latents(
            z, self.vae.latents_mean, self.vae.latents_std, self.vae.config.scaling_factor
        )
        if self.vae.config.timestep_conditioning and self.decode_noise_scale > 0:
            noise = randn_tensor(z.shape, generator=self.generator, device=z.device, dtype=z.dtype)
            z = (1 - self.decode_noise_scale) * z + self.decode_noise_scale * noise
        return z.to(self.vae.dtype)

    def run_vae(self, z: torch.Tensor) -> torch.Tensor:
        timestep = None
        if self.vae.config.timestep_conditioning:
            timestep = torch.full((z.shape[0],), self.decode_timestep, device=z.device, dtype=z.dtype)
        return self.vae.decode(z, timestep, return_dict=False)[0]


class HunyuanVideoDecoder(LatentDecoder):
    """HunyuanVideo: latents divided by the VAE's scaling factor."""

    @property
    def temporal_compression(self) -> int:
        return int(self.pipe.vae_scale_factor_temporal)

    def latent_frames(self, latents: torch.Tensor, grid: tuple[int, int, int] | None) -> int:
        return int(latents.shape[2])

    def vae_latents(self, latents: torch.Tensor, grid: tuple[int, int, int] | None) -> torch.Tensor:
        return latents.to(self.vae.dtype) / self.vae.config.scaling_factor
