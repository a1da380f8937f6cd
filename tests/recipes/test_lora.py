"""LoRA set-up, the adapter-disabled reference policy, and save / load_lora_weights round trips on every family."""

import pytest
import torch

from descore.errors import CheckpointError, ConfigError
from recipes.lora import (
    TRANSFORMER_2_WEIGHT_NAME,
    LoraSpec,
    add_lora,
    load_lora,
    lora_parameters,
    reference_policy,
    save_lora,
)
from recipes.rollout import seeded_generators
from tests.recipes.conftest import FAMILIES
from toyworld.tiny_models.video_pipelines import PIPELINE_CALL_DEFAULTS


def _sample(pipe, family):
    return pipe(
        ["a red circle"],
        **PIPELINE_CALL_DEFAULTS[family],
        generator=seeded_generators([1]),
        output_type="latent",
    ).frames


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_round_trip_and_reference(family, make_pipeline, tmp_path):
    pipe = make_pipeline(family)
    base = _sample(pipe, family)
    params = add_lora(pipe, LoraSpec(rank=4, alpha=8))
    assert params and all(p.requires_grad for p in params)
    trainable = [
        p
        for m in pipe.components.values()
        if isinstance(m, torch.nn.Module)
        for p in m.parameters()
        if p.requires_grad
    ]
    assert {id(p) for p in trainable} == {id(p) for p in params}  # VAE and text encoders frozen
    assert torch.equal(_sample(pipe, family), base)  # B = 0 at init: the base model
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    trained = _sample(pipe, family)
    assert not torch.allclose(trained, base)
    with reference_policy(pipe):
        assert torch.equal(_sample(pipe, family), base)
    assert torch.equal(_sample(pipe, family), trained)  # re-enabled after the block

    save_lora(pipe, tmp_path)
    fresh = make_pipeline(family)
    if family == "wan2.2":
        assert (tmp_path / TRANSFORMER_2_WEIGHT_NAME).is_file()
        load_lora(fresh, tmp_path)
    else:
        fresh.load_lora_weights(tmp_path)  # the plain diffusers call
    assert torch.equal(_sample(fresh, family), trained)


def test_wan22_single_expert_and_bad_specs(make_pipeline, tmp_path):
    pipe = make_pipeline("wan2.2")
    add_lora(pipe, LoraSpec(rank=2, alpha=2, components=["transformer_2"]))
    assert not getattr(pipe.transformer, "peft_config", None)
    assert len(lora_parameters(pipe)) > 0
    with pytest.raises(ConfigError, match="rank"):
        LoraSpec(rank=0)
    with pytest.raises(ConfigError, match="components"):
        add_lora(make_pipeline("wan2.1"), LoraSpec(rank=2, components=["transformer_2"]))
    with pytest.raises(ConfigError, match="target_modules"):
        add_lora(make_pipeline("wan2.1"), LoraSpec(rank=2, target_modules=["no_such_layer"]))
    with pytest.raises(CheckpointError, match="no LoRA weights"):
        load_lora(make_pipeline("wan2.1"), tmp_path)
    with pytest.raises(ConfigError, match="no LoRA adapter"):
        save_lora(make_pipeline("wan2.1"), tmp_path)


def test_lora_init_is_seeded_and_leaves_the_callers_rng_alone(make_pipeline):
    def init(seed):
        torch.manual_seed(123)
        params = add_lora(make_pipeline("wan2.1"), LoraSpec(rank=4, alpha=8), seed=seed)
        return [p.detach().clone() for p in params], torch.rand(3)

    first, after = init(3)
    again, _ = init(3)
    other, _ = init(4)
    torch.manual_seed(123)
    make_pipeline("wan2.1")
    assert torch.equal(after, torch.rand(3))  # the caller's stream continues as if no adapter was added
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
