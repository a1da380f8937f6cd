"""Stochastic sampling steps with exact Gaussian log-probabilities, the policy of online RL on a diffusion sampler.

A deterministic sampler step (Euler on a flow, DDIM) has no density. Each step here is a Gaussian
``x' ~ N(mean(x, model_output), std^2 I)`` whose marginals match the deterministic sampler's, so that the sampler is a
stochastic policy with a per-step log-probability:

- :func:`flow_sde_step` for rectified flows (Wan, LTX, HunyuanVideo), ``x_s = (1 - s) x0 + s eps``, velocity
  ``v = eps - x0``. ``form="flow_grpo"`` is Flow-GRPO's SDE (``sigma_t = a sqrt(s / (1 - s))``); ``form="cps"`` is
  the coefficient-preserving sampler (``sigma_t = s' sin(a pi / 2)``), whose last step (``s' = 0``) is deterministic.
- :func:`ddim_step` for variance-preserving DDPM models (CogVideoX): DDIM with ``eta`` (DDPO's policy), for
  epsilon-, sample- or v-prediction. The last step (to ``alpha_prev = 1``) is deterministic.

Every computation runs in fp32 whatever the model's dtype, so that rollout and training log-probabilities agree to
the bit (the importance ratio must be exactly 1 before the first update). The log-probability of a sample is the
Gaussian log-density AVERAGED over all non-batch dimensions, as in Flow-GRPO (averaging keeps ratios near 1 for any
video size). A step whose std is zero has no density: its log-probability is NaN and callers must not train on it
(:attr:`SDEStep.stochastic`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from diffusers.utils.torch_utils import randn_tensor

from descore.errors import ConfigError
from reward_guidance.families import ddim_x0, flow_x0

FlowForm = Literal["flow_grpo", "cps"]
FLOW_FORMS: tuple[str, ...] = ("flow_grpo", "cps")
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
#: A sigma this close to 1 is the start of the flow. Schedulers compute it as 1 up to rounding (UniPC's flow sigmas,
#: Wan's default scheduler, give 1 - 1e-6), where Flow-GRPO's ``s / (1 - s)`` would make the step's std hundreds of
#: times the latents' scale.
SIGMA_ONE_ATOL = 1e-4


@dataclass
class SDEStep:
    """One stochastic step: the sample taken, its Gaussian's mean and std, and its log-probability.

    ``std`` has shape (B,) (one scale per sample); ``log_prob`` has shape (B,) and is NaN where ``std`` is zero.
    """

    prev_sample: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    log_prob: torch.Tensor

    @property
    def stochastic(self) -> bool:
        """Whether the step has a density (every std positive)."""
        return bool((self.std > 0).all())


def _per_sample(value: torch.Tensor | float, batch: int, device: torch.device) -> torch.Tensor:
    """A scalar or (B,) value as a (B,) fp32 tensor."""
    value = torch.as_tensor(value, dtype=torch.float32, device=device)
    if value.ndim == 0:
        return value.expand(batch)
    if value.shape != (batch,):
        raise ConfigError(
            f"a per-sample schedule value must be a scalar or have shape ({batch},), got {tuple(value.shape)}"
        )
    return value


def _bcast(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (B,) tensor viewed to broadcast against a (B, ...) tensor."""
    return value.view(-1, *([1] * (like.ndim - 1)))


def gaussian_log_prob(sample: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(sample; mean, std^2 I) per element, averaged over all non-batch dims, in fp32. ``std``: (B,).

    Returns (B,); NaN for samples whose std is zero (a deterministic step has no density).
    """
    sample = sample.float()
    mean = mean.float()
    std = std.float()
    safe = torch.where(std > 0, std, torch.ones_like(std))
    std_b = _bcast(safe, sample)
    elementwise = -((sample.detach() - mean) ** 2) / (2 * std_b**2) - torch.log(std_b) - _LOG_SQRT_2PI
    log_prob = elementwise.mean(dim=tuple(range(1, sample.ndim)))
    return torch.where(std > 0, log_prob, torch.full_like(log_prob, float("nan")))


def _draw(
    mean: torch.Tensor,
    std: torch.Tensor,
    prev_sample: torch.Tensor | None,
    generator: torch.Generator | list[torch.Generator] | None,
    noise: torch.Tensor | None,
) -> SDEStep:
    """Sample ``mean + std * noise`` unless ``prev_sample`` is given, and score it."""
    if prev_sample is None:
        if noise is None:
            noise = randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=torch.float32)
        prev_sample = mean + _bcast(std, mean) * noise.float()
    prev_sample = prev_sample.float()
    return SDEStep(prev_sample, mean, std, gaussian_log_prob(prev_sample, mean, std))


def flow_sde_std(
    sigma: torch.Tensor | float,
    sigma_next: torch.Tensor | float,
    noise_level: float,
    form: FlowForm = "flow_grpo",
) -> torch.Tensor:
    """The std of :func:`flow_sde_step`'s Gaussian (before the ``sqrt(-dt)`` factor of the Flow-GRPO form)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float32)
    sigma_next = torch.as_tensor(sigma_next, dtype=torch.float32)
    if form == "flow_grpo":
        # At s == 1 the ratio s / (1 - s) diverges: the reference uses the next sigma in the denominator.
        denominator = 1 - torch.where(sigma >= 1 - SIGMA_ONE_ATOL, sigma_next, sigma)
        return noise_level * torch.sqrt(sigma / denominator)
    if form == "cps":
        return sigma_next * math.sin(noise_level * math.pi / 2)
    raise ConfigError(f"sde form: unknown {form!r}; expected one of {list(FLOW_FORMS)}")


def flow_sde_step(
    sample: torch.Tensor,
    velocity: torch.Tensor,
    sigma: torch.Tensor | float,
    sigma_next: torch.Tensor | float,
    noise_level: float = 0.7,
    form: FlowForm = "flow_grpo",
    *,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    noise: torch.Tensor | None = None,
) -> SDEStep:
    """One SDE step of a rectified flow from sigma ``s`` to ``s' < s``, with the log-probability of its sample.

    ``velocity`` is the model's ``v = eps - x0`` prediction (after guidance). ``sigma``, ``sigma_next``: scalars or
    (B,). With ``prev_sample`` given, no noise is drawn and the log-probability of that sample is returned (the
    training recomputation); otherwise the sample is drawn with ``noise`` or from ``generator``. ``noise_level`` 0
    gives the deterministic Euler step (std 0, NaN log-probability).

    Flow-GRPO: ``sigma_t = a sqrt(s / (1 - s))``, ``mean = x (1 + sigma_t^2 dt / (2 s)) + v (1 + sigma_t^2 (1 - s) /
    (2 s)) dt``, ``std = sigma_t sqrt(-dt)``. CPS: ``sigma_t = s' sin(a pi / 2)``, ``mean = x0_hat (1 - s') +
    x1_hat sqrt(s'^2 - sigma_t^2)`` with ``x0_hat = x - s v``, ``x1_hat = x + (1 - s) v``, ``std = sigma_t``.
    """
    x = sample.float()
    v = velocity.float()
    batch = x.shape[0]
    s = _per_sample(sigma, batch, x.device)
    s_next = _per_sample(sigma_next, batch, x.device)
    if bool((s_next >= s).any()) or bool((s <= 0).any()):
        raise ConfigError(
            f"flow_sde_step: sigmas must decrease and stay positive, got {s.tolist()} -> {s_next.tolist()}"
        )
    sigma_t = flow_sde_std(s, s_next, noise_level, form)
    s_b, s_next_b, sigma_t_b = _bcast(s, x), _bcast(s_next, x), _bcast(sigma_t, x)
    if form == "flow_grpo":
        dt = s_next_b - s_b
        mean = x * (1 + sigma_t_b**2 / (2 * s_b) * dt) + v * (1 + sigma_t_b**2 * (1 - s_b) / (2 * s_b)) * dt
        std = sigma_t * torch.sqrt(s - s_next)
    else:
        x0_hat = flow_x0(x, v, s_b)
        x1_hat = x + (1 - s_b) * v
        mean = x0_hat * (1 - s_next_b) + x1_hat * torch.sqrt(s_next_b**2 - sigma_t_b**2)
        std = sigma_t
    return _draw(mean, std, prev_sample, generator, noise)


def ddim_step(
    sample: torch.Tensor,
    model_output: torch.Tensor,
    alpha_prod: torch.Tensor | float,
    alpha_prod_prev: torch.Tensor | float,
    eta: float = 1.0,
    prediction_type: str = "v_prediction",
    *,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    noise: torch.Tensor | None = None,
) -> SDEStep:
    """One DDIM step with stochasticity ``eta`` (DDPO's policy) and the log-probability of its sample.

    ``alpha_prod`` / ``alpha_prod_prev`` are the cumulative alphas of the current and the next (less noisy) timestep.
    ``std = eta sqrt((1 - a') / (1 - a) (1 - a / a'))``, ``mean = sqrt(a') x0_hat + sqrt(1 - a' - std^2) eps_hat``.
    With ``eta = 0`` this is exactly the deterministic DDIM step of diffusers' DDIM / CogVideoX-DDIM schedulers.
    """
    x = sample.float()
    out = model_output.float()
    batch = x.shape[0]
    a = _per_sample(alpha_prod, batch, x.device)
    a_prev = _per_sample(alpha_prod_prev, batch, x.device)
    a_b, a_prev_b = _bcast(a, x), _bcast(a_prev, x)
    x0_hat = ddim_x0(x, out, a_b, prediction_type)
    variance = (1 - a_prev) / (1 - a) * (1 - a / a_prev)
    std = eta * variance.clamp(min=0).sqrt()
    # (x - sqrt(a) x0_hat) / sqrt(1 - a) is eps_hat; written so that a = 0 (zero terminal SNR) stays finite.
    direction = ((1 - a_prev - std**2).clamp(min=0) / (1 - a)).sqrt()
    mean = a_prev_b.sqrt() * x0_hat + _bcast(direction, x) * (x - a_b.sqrt() * x0_hat)
    return _draw(mean, std, prev_sample, generator, noise)
