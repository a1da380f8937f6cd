"""The SDE steps: log-probabilities equal a direct Gaussian density, means reduce to the deterministic samplers."""

import math

import pytest
import torch
from diffusers import CogVideoXDDIMScheduler, FlowMatchEulerDiscreteScheduler

from descore.errors import ConfigError
from recipes.sde import ddim_step, flow_sde_std, flow_sde_step, gaussian_log_prob
from toyworld.tiny_models.video_pipelines import COGVIDEOX_SCHEDULER


def _direct_log_density(sample, mean, std):
    """Per-sample mean over elements of the Normal log-density, from torch.distributions in float64."""
    dist = torch.distributions.Normal(mean.double(), std.double().view(-1, *([1] * (mean.ndim - 1))))
    return dist.log_prob(sample.double()).flatten(1).mean(1)


@pytest.mark.parametrize("form", ["flow_grpo", "cps"])
def test_flow_sde_log_prob_matches_gaussian_density(form):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 2, 5, 5, generator=g)
    v = torch.randn(3, 4, 2, 5, 5, generator=g)
    step = flow_sde_step(x, v, 0.8, 0.6, noise_level=0.7, form=form, generator=g)
    assert step.stochastic
    assert torch.allclose(
        step.log_prob.double(), _direct_log_density(step.prev_sample, step.mean, step.std), atol=1e-5
    )
    # the formula for the std, written out
    if form == "flow_grpo":
        expected_std = 0.7 * math.sqrt(0.8 / 0.2) * math.sqrt(0.2)
    else:
        expected_std = 0.6 * math.sin(0.7 * math.pi / 2)
    assert torch.allclose(step.std, torch.full((3,), expected_std), atol=1e-6)
    # the drawn sample is distributed as stated: its standardised residual has unit variance
    residual = (step.prev_sample - step.mean) / expected_std
    assert abs(residual.std().item() - 1) < 0.1


def test_flow_grpo_mean_formula_and_recompute():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, 3, 4, generator=g)
    v = torch.randn(2, 8, 3, 4, generator=g)
    s, s2, a = 0.9, 0.5, 0.7
    sigma_t = a * math.sqrt(s / (1 - s))
    dt = s2 - s
    mean = x * (1 + sigma_t**2 / (2 * s) * dt) + v * (1 + sigma_t**2 * (1 - s) / (2 * s)) * dt
    step = flow_sde_step(x, v, s, s2, a, generator=g)
    assert torch.allclose(step.mean, mean, atol=1e-6)
    again = flow_sde_step(x, v, s, s2, a, prev_sample=step.prev_sample)
    assert torch.equal(again.log_prob, step.log_prob)
    # a different velocity moves the mean, and the density of the same sample follows it
    other = flow_sde_step(x, v + 0.1, s, s2, a, prev_sample=step.prev_sample)
    assert not torch.allclose(other.log_prob, step.log_prob)
    assert torch.allclose(
        other.log_prob.double(), _direct_log_density(step.prev_sample, other.mean, other.std), atol=1e-5
    )


def test_flow_sde_at_sigma_one_uses_next_sigma_and_per_sample_sigmas():
    std = flow_sde_std(torch.tensor(1.0), torch.tensor(0.8), 0.7)
    assert torch.isclose(std, torch.tensor(0.7 * math.sqrt(1 / 0.2)))
    # 1 up to a scheduler's rounding (UniPC's flow sigmas start at 1 - 1e-6) is 1, not a std of ~700
    assert torch.isclose(flow_sde_std(torch.tensor(1 - 1e-6), torch.tensor(0.8), 0.7), std)
    x = torch.randn(2, 3, 4)
    step = flow_sde_step(x, torch.randn(2, 3, 4), torch.tensor([1.0, 0.5]), torch.tensor([0.8, 0.25]), 0.7)
    assert torch.isfinite(step.log_prob).all()


def test_flow_noise_level_zero_is_euler_and_cps_last_step_deterministic():
    x, v = torch.randn(2, 6), torch.randn(2, 6)
    euler = flow_sde_step(x, v, 0.7, 0.4, noise_level=0.0)
    assert torch.allclose(euler.prev_sample, x + (0.4 - 0.7) * v, atol=1e-6)
    assert not euler.stochastic and torch.isnan(euler.log_prob).all()
    cps = flow_sde_step(x, v, 0.7, 0.4, noise_level=0.0, form="cps")
    assert torch.allclose(cps.prev_sample, x + (0.4 - 0.7) * v, atol=1e-6)
    last = flow_sde_step(x, v, 0.3, 0.0, noise_level=0.7, form="cps")
    assert not last.stochastic and torch.allclose(last.prev_sample, x - 0.3 * v, atol=1e-6)


def test_flow_euler_matches_diffusers_scheduler():
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(4)
    x, v = torch.randn(1, 4, 2, 3, 3), torch.randn(1, 4, 2, 3, 3)
    expected = scheduler.step(v, scheduler.timesteps[1], x, return_dict=False)[0]
    ours = flow_sde_step(x, v, scheduler.sigmas[1], scheduler.sigmas[2], noise_level=0.0).prev_sample
    assert torch.allclose(ours, expected, atol=1e-6)


def test_ddim_eta_zero_matches_cogvideox_scheduler_and_log_prob_is_gaussian():
    scheduler = CogVideoXDDIMScheduler(**COGVIDEOX_SCHEDULER)
    scheduler.set_timesteps(3)
    x, v = torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 4, 4, 4)
    for t in scheduler.timesteps:  # includes t = 999 where alpha_prod = 0 (zero terminal SNR)
        prev_t = int(t) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
        a = scheduler.alphas_cumprod[t]
        a_prev = scheduler.alphas_cumprod[prev_t] if prev_t >= 0 else scheduler.final_alpha_cumprod
        expected = scheduler.step(v, t, x, return_dict=False)[0]
        ours = ddim_step(x, v, a, a_prev, eta=0.0).prev_sample
        assert torch.allclose(ours, expected.float(), atol=1e-5)
        noisy = ddim_step(x, v, a, a_prev, eta=1.0, generator=torch.Generator().manual_seed(0))
        if prev_t >= 0:
            assert noisy.stochastic
            direct = _direct_log_density(noisy.prev_sample, noisy.mean, noisy.std)
            assert torch.allclose(noisy.log_prob.double(), direct, atol=1e-5)
        else:  # the last step lands on alpha = 1: no noise left to add
            assert not noisy.stochastic


def test_log_prob_is_fp32_for_half_inputs_and_nan_for_zero_std():
    x = torch.randn(2, 4, dtype=torch.bfloat16)
    lp = gaussian_log_prob(x, torch.zeros(2, 4, dtype=torch.bfloat16), torch.tensor([1.0, 0.0]))
    assert lp.dtype == torch.float32
    assert torch.isfinite(lp[0]) and torch.isnan(lp[1])


def test_bad_inputs():
    with pytest.raises(ConfigError, match="form"):
        flow_sde_step(torch.randn(1, 2), torch.randn(1, 2), 0.5, 0.3, form="dance")
    with pytest.raises(ConfigError, match="decrease"):
        flow_sde_step(torch.randn(1, 2), torch.randn(1, 2), 0.3, 0.5)
    with pytest.raises(ConfigError, match="prediction_type"):
        ddim_step(torch.randn(1, 2), torch.randn(1, 2), 0.5, 0.6, prediction_type="flow")
