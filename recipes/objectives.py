"""The denoising training objective of each schedule kind, for recipes that train on clean samples (RWR, DPO).

Rectified flow (Wan, LTX, HunyuanVideo): ``x_s = (1 - s) x0 + s eps``, target ``v = eps - x0``, transformer
timestep ``s * num_train_timesteps``. Variance-preserving DDPM (CogVideoX): ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t)
eps`` on the scheduler's ``alphas_cumprod``, target ``v = sqrt(a_t) eps - sqrt(1 - a_t) x0`` (v-prediction) or
``eps``. Noise levels ``u`` in (0, 1) come from :func:`logit_normal` (Flow-DPO, SD3) or any other density.
The model prediction is the conditional branch (Diffusion-DPO, RWR), or with ``train_cfg`` the classifier-free guided
output the samples were drawn with, each sample routed to the expert that owns its timestep (Wan2.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DiffusionPipeline

from recipes.families import Conditioning, DenoiserFamily, SampleContext, guided_output


def logit_normal(batch: int, generator: torch.Generator, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """``sigmoid(N(mean, std^2))`` noise levels in (0, 1), shape (batch,)."""
    return torch.sigmoid(mean + std * torch.randn(batch, generator=generator))


@dataclass
class NoisyBatch:
    """Noised latents, the transformer timesteps (B,) and the regression target."""

    latents: torch.Tensor
    timesteps: torch.Tensor
    target: torch.Tensor


def noisy_batch(context: SampleContext, x0: torch.Tensor, noise: torch.Tensor, u: torch.Tensor) -> NoisyBatch:
    """Noise clean latents ``x0`` to levels ``u`` (B,) in (0, 1) with ``noise`` and give the training target."""
    schedule = context.schedule
    x0, noise = x0.float(), noise.float()
    view = (-1,) + (1,) * (x0.ndim - 1)
    if schedule.kind == "flow":
        s = u.float().to(x0.device)
        latents = (1 - s.view(view)) * x0 + s.view(view) * noise
        return NoisyBatch(latents, s * schedule.num_train_timesteps, noise - x0)
    steps = (
        (u.float() * (schedule.num_train_timesteps - 1))
        .round()
        .long()
        .clamp(0, schedule.num_train_timesteps - 1)
    )
    alphas = schedule.alphas_cumprod[steps].float().to(x0.device).view(view)
    latents = alphas.sqrt() * x0 + (1 - alphas).sqrt() * noise
    if schedule.prediction_type == "v_prediction":
        target = alphas.sqrt() * noise - (1 - alphas).sqrt() * x0
    elif schedule.prediction_type == "epsilon":
        target = noise
    else:
        target = x0
    return NoisyBatch(latents, steps.to(x0.device), target)


def model_prediction(
    family: DenoiserFamily,
    pipe: DiffusionPipeline,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    conditioning: Conditioning,
    context: SampleContext,
    guided: bool = False,
) -> torch.Tensor:
    """The model output (fp32) for per-sample ``timesteps``, each sample on the expert that owns its timestep: the
    prompt-conditioned branch, or with ``guided`` the classifier-free guided output at the expert's sampling
    scale (as the samples were drawn)."""
    experts = [family.denoiser(pipe, t, context.spec) for t in timesteps]

    def expert_output(module: torch.nn.Module, scale: float, index: torch.Tensor | slice) -> torch.Tensor:
        part = conditioning.select(index)
        scale = scale if guided else 1.0
        return guided_output(family, module, latents[index], timesteps[index], part, scale, context.static)

    owners = {id(module): (module, scale) for module, scale in experts}
    if len(owners) == 1:
        return expert_output(*experts[0], slice(None))
    out = torch.empty_like(latents, dtype=torch.float32)
    for module, scale in owners.values():
        index = torch.tensor([i for i, e in enumerate(experts) if e[0] is module], device=latents.device)
        out[index] = expert_output(module, scale, index)
    return out


def denoising_errors(
    family: DenoiserFamily,
    pipe: DiffusionPipeline,
    batch: NoisyBatch,
    conditioning: Conditioning,
    context: SampleContext,
    guided: bool = False,
) -> torch.Tensor:
    """Per-sample mean squared error ``||target - prediction||^2`` (B,) of :func:`model_prediction`."""
    prediction = model_prediction(family, pipe, batch.latents, batch.timesteps, conditioning, context, guided)
    return ((prediction - batch.target) ** 2).flatten(1).mean(1)
