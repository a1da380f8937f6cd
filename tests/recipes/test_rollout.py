"""Rollouts from the pipelines' own components: exact log-prob recomputation, parity with the pipelines' samplers."""

import pytest
import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler

from descore.errors import ConfigError
from recipes.families import family_of
from recipes.rollout import recompute_log_probs, rollout, seeded_generators
from tests.recipes.conftest import FAMILIES, PROMPTS, tiny_spec


@pytest.mark.parametrize("family", FAMILIES)
def test_recomputed_log_probs_equal_the_rollouts(family, make_pipeline):
    """Before any update the GRPO ratio exp(new - old) is exactly 1, on every stochastic step."""
    pipe = make_pipeline(family)
    trajectory = rollout(pipe, PROMPTS, tiny_spec(family), seeded_generators([3, 4]))
    steps = trajectory.training_steps()
    assert steps, "no stochastic step"
    assert trajectory.latents.shape[:2] == (2, 4) and trajectory.log_probs.shape == (2, 3)
    for step in steps:
        recomputed = recompute_log_probs(pipe, trajectory, step)
        assert recomputed.log_prob.requires_grad
        ratio = torch.exp(recomputed.log_prob - trajectory.log_probs[:, step])
        assert torch.equal(ratio, torch.ones(2)), (family, step, ratio)
        assert torch.equal(recomputed.prev_sample, trajectory.latents[:, step + 1])


@pytest.mark.parametrize(
    ("family", "changes"),
    [
        ("wan2.1", {}),
        ("wan2.2", {}),
        ("wan2.2", {"guidance_scale": 1.0, "guidance_scale_2": 3.0}),  # no CFG at all, as WanPipeline decides
        ("cogvideox", {}),
        ("ltx", {}),
        ("hunyuanvideo", {}),
    ],
)
def test_deterministic_rollout_reproduces_the_pipeline(family, changes, make_pipeline):
    """With no noise the loop is the pipeline's own sampler (Wan: with an Euler scheduler in place of UniPC)."""
    pipe = make_pipeline(family)
    if family.startswith("wan"):
        pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    spec = tiny_spec(family, **changes)
    ode = rollout(pipe, PROMPTS, spec, seeded_generators([5, 6]), noise_level=0.0)
    assert not ode.stochastic.any() and torch.isnan(ode.log_probs).all()
    call = {
        k: v for k, v in vars(spec).items() if k not in ("true_cfg_scale", "frame_rate") and v is not None
    }
    if family != "hunyuanvideo":
        call.pop("prompt_template", None)
    expected = pipe(PROMPTS, **call, generator=seeded_generators([5, 6]), output_type="latent").frames
    assert torch.allclose(ode.final, expected.float(), atol=1e-5), (ode.final - expected).abs().max()


def test_sde_rollout_from_wans_own_scheduler_stays_on_the_latents_scale(make_pipeline):
    """Wan's UniPC scheduler starts at sigma 1 - 1e-6: the first SDE step must treat it as 1 (the std would be
    hundreds of times the latents' scale otherwise, and every later step would run on noise)."""
    pipe = make_pipeline("wan2.1")
    spec = tiny_spec("wan2.1")
    schedule = family_of(pipe).schedule(pipe, spec, torch.device("cpu"))
    assert 0 < 1 - float(schedule.sigmas[0]) < 1e-5
    sde = rollout(pipe, PROMPTS, spec, seeded_generators([5, 6]))
    assert sde.stochastic.all()
    assert sde.latents.flatten(2).std(dim=2).max() < 3


def test_wan22_uses_both_experts_with_their_guidance(make_pipeline):
    pipe = make_pipeline("wan2.2")
    spec = tiny_spec("wan2.2")
    schedule = family_of(pipe).schedule(pipe, spec, torch.device("cpu"))
    boundary = pipe.config.boundary_ratio * 1000
    experts = [family_of(pipe).denoiser(pipe, t, spec) for t in schedule.timesteps]
    assert [m is pipe.transformer for m, _ in experts] == [bool(t >= boundary) for t in schedule.timesteps]
    assert {m is pipe.transformer_2 for m, _ in experts} == {True, False}
    assert [s for m, s in experts if m is pipe.transformer_2] == [spec.guidance_scale_2] * sum(
        m is pipe.transformer_2 for m, _ in experts
    )


def test_sde_window_fast_mode_and_cps(make_pipeline):
    pipe = make_pipeline("wan2.1")
    spec = tiny_spec("wan2.1")
    fast = rollout(pipe, PROMPTS, spec, seeded_generators([1, 2]), sde_steps=[1])
    assert fast.stochastic.tolist() == [False, True, False] and fast.training_steps() == [1]
    assert torch.isnan(fast.log_probs[:, [0, 2]]).all() and torch.isfinite(fast.log_probs[:, 1]).all()
    again = rollout(pipe, PROMPTS, spec, seeded_generators([1, 2]), sde_steps=[1])
    assert torch.equal(fast.latents, again.latents)
    cps = rollout(pipe, PROMPTS, spec, seeded_generators([1, 2]), form="cps")
    assert cps.stochastic.tolist() == [True, True, False]  # CPS ends on sigma 0 deterministically
    step = recompute_log_probs(pipe, cps, 1)
    assert torch.equal(step.log_prob, cps.log_probs[:, 1])
    with pytest.raises(ConfigError, match="deterministic"):
        recompute_log_probs(pipe, cps, 2)


def test_a_samples_trajectory_does_not_depend_on_its_batch(make_pipeline):
    pipe = make_pipeline("ltx")
    spec = tiny_spec("ltx")
    both = rollout(pipe, PROMPTS, spec, seeded_generators([7, 8]))
    alone = rollout(pipe, PROMPTS[1:], spec, seeded_generators([8]))
    assert torch.allclose(both.latents[1], alone.latents[0], atol=1e-4)
    sub = both.select(torch.tensor([1]))
    assert (
        sub.prompts == PROMPTS[1:]
        and sub.context.conditioning.positive["encoder_hidden_states"].shape[0] == 1
    )


def test_bad_inputs(make_pipeline):
    pipe = make_pipeline("wan2.1")
    spec = tiny_spec("wan2.1")
    with pytest.raises(ConfigError, match="generators"):
        rollout(pipe, PROMPTS, spec, seeded_generators([1]))
    with pytest.raises(ConfigError, match="num_frames"):
        rollout(pipe, PROMPTS, tiny_spec("wan2.1", num_frames=8), seeded_generators([1, 2]))
    with pytest.raises(ConfigError, match="height/width"):
        rollout(pipe, PROMPTS, tiny_spec("wan2.1", height=36), seeded_generators([1, 2]))
    with pytest.raises(ConfigError, match="sde_steps"):
        rollout(pipe, PROMPTS, spec, seeded_generators([1, 2]), sde_steps=[5])
    with pytest.raises(ConfigError, match="sde_form"):
        rollout(pipe, PROMPTS, spec, seeded_generators([1, 2]), form="dance")
    with pytest.raises(ConfigError, match="not a supported video pipeline"):
        family_of(AutoencoderKLWan())
    pipe.scheduler = pipe.scheduler.__class__.from_config({**pipe.scheduler.config, "use_flow_sigmas": False})
    with pytest.raises(ConfigError, match="flow-matching sigmas"):
        rollout(pipe, PROMPTS, spec, seeded_generators([1, 2]))


def test_grad_steps_keep_the_graph_only_through_the_last_steps(make_pipeline):
    from recipes.lora import LoraSpec, add_lora

    pipe = make_pipeline("wan2.1")
    params = add_lora(pipe, LoraSpec(rank=2, alpha=2, init="gaussian"))
    trajectory = rollout(
        pipe, PROMPTS, tiny_spec("wan2.1"), seeded_generators([1, 2]), sde_steps=[], grad_steps=[2]
    )
    assert trajectory.final.requires_grad and not trajectory.latents.requires_grad
    trajectory.final.square().mean().backward()
    assert all(p.grad is not None for p in params)
    none = rollout(pipe, PROMPTS, tiny_spec("wan2.1"), seeded_generators([1, 2]), sde_steps=[])
    assert not none.final.requires_grad
