"""The denoising objective of RWR and DPO: the conditional branch, or (``train_cfg``) the guided output sampled with."""

import math

import pytest
import torch

from descore.errors import ConfigError
from recipes.dpo import DPOTrainer
from recipes.families import predict
from recipes.objectives import model_prediction
from recipes.rollout import prepare_context
from recipes.rwr import RWRTrainer
from tests.recipes.conftest import PROMPTS, tiny_spec
from tests.recipes.test_recipes import make_config, reward

CFG_FAMILIES = ["wan2.1", "wan2.2", "cogvideox", "ltx", "hunyuanvideo"]


@pytest.mark.parametrize("name", CFG_FAMILIES)
def test_guided_objective_is_the_samplers_prediction(name, make_pipeline):
    """At each sampling step's timestep, the guided training prediction equals the output the sampler steps with
    (Wan2.2: on each step's own expert and scale); without ``guided`` it is the prompt branch alone."""
    pipe = make_pipeline(name)
    changes = {"true_cfg_scale": 3.0} if name == "hunyuanvideo" else {}
    family, context = prepare_context(pipe, PROMPTS, tiny_spec(name, **changes))
    assert context.conditioning.negative is not None
    latents = torch.randn(len(context.schedule), len(PROMPTS), *_latent_shape(pipe, family, context))
    with torch.no_grad():
        for step in range(len(context.schedule)):
            timesteps = context.schedule.timesteps[step].expand(len(PROMPTS))
            sampled = predict(family, pipe, latents[step], step, context)
            guided = model_prediction(
                family, pipe, latents[step], timesteps, context.conditioning, context, guided=True
            )
            torch.testing.assert_close(guided, sampled, rtol=1e-5, atol=1e-6)
            module, _ = family.denoiser(pipe, timesteps[0], context.spec)
            cond = family.forward(
                module, latents[step], timesteps, context.conditioning.positive, context.static
            ).float()
            plain = model_prediction(family, pipe, latents[step], timesteps, context.conditioning, context)
            torch.testing.assert_close(plain, cond, rtol=1e-5, atol=1e-6)
            assert not torch.allclose(guided, plain, atol=1e-4)


def test_guided_objective_routes_mixed_timesteps_to_their_experts(make_pipeline):
    """Wan2.2 with one sample per expert in a batch: each sample gets its own expert's guided output."""
    pipe = make_pipeline("wan2.2")
    family, context = prepare_context(pipe, PROMPTS, tiny_spec("wan2.2"))
    steps = [0, len(context.schedule) - 1]
    modules = {id(family.denoiser(pipe, context.schedule.timesteps[s], context.spec)[0]) for s in steps}
    assert len(modules) == 2, "the first and last steps should fall on different experts"
    latents = torch.randn(2, *_latent_shape(pipe, family, context))
    timesteps = torch.stack([context.schedule.timesteps[s] for s in steps])
    with torch.no_grad():
        mixed = model_prediction(family, pipe, latents, timesteps, context.conditioning, context, guided=True)
        for row, step in enumerate(steps):
            alone = predict(family, pipe, latents, step, context)[row]
            torch.testing.assert_close(mixed[row], alone, rtol=1e-5, atol=1e-6)


def test_train_cfg_changes_the_update_and_needs_cfg(make_pipeline, tmp_path):
    steps = {}
    for train_cfg in (False, True):
        config = make_config(
            "rwr", "wan2.1", tmp_path / str(train_cfg), group_size=3, sample_batch_size=3, train_cfg=train_cfg
        )
        trainer = RWRTrainer(config, pipe=make_pipeline("wan2.1"), reward=reward())
        metrics = trainer.run_update(0)
        steps[train_cfg] = ([p.detach().clone() for p in trainer.params], metrics["train/denoising_error"])
    assert steps[True][1] != pytest.approx(steps[False][1], rel=1e-4)
    assert not all(torch.equal(a, b) for a, b in zip(steps[False][0], steps[True][0]))
    config = make_config(
        "rwr", "wan2.1", tmp_path / "off", train_cfg=True, sampling=tiny_spec("wan2.1", guidance_scale=1.0)
    )
    with pytest.raises(ConfigError, match="train_cfg"):
        RWRTrainer(config, pipe=make_pipeline("wan2.1"), reward=reward())


def test_dpo_with_train_cfg_starts_at_its_reference(make_pipeline, tmp_path):
    """The reference (adapter disabled) is computed with the same guided objective: before any step the policy is
    the reference, so the DPO loss is exactly log 2, while the errors are the guided ones."""
    errors = {}
    for train_cfg in (False, True):
        config = make_config(
            "dpo",
            "cogvideox",
            tmp_path / str(train_cfg),
            group_size=3,
            sample_batch_size=3,
            train_cfg=train_cfg,
        )
        metrics = DPOTrainer(config, pipe=make_pipeline("cogvideox"), reward=reward()).run_update(0)
        assert metrics["train/loss"] == pytest.approx(math.log(2))
        errors[train_cfg] = metrics["train/model_error_winner"]
    assert errors[True] != pytest.approx(errors[False], rel=1e-4)


def _latent_shape(pipe, family, context) -> tuple[int, ...]:
    """(C, F, H, W) or the packed (tokens, C) latent of one sample of the context's spec."""
    return tuple(
        family.initial_latents(pipe, context.spec, [torch.Generator().manual_seed(0)], context.device).shape[
            1:
        ]
    )
