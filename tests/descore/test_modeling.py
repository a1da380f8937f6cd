"""DeScore checkpoints: round trip, strict loading, config validation, CLI."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from descore.cli import main
from descore.config import DeScoreConfig
from descore.errors import CheckpointError, ConfigError
from descore.scoring import DeScore
from descore.video_io import write_video
from tests.descore.test_scoring import PROMPTS, VIDEOS, make_scorer


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    scorer = make_scorer("qwen3_vl", seed=3)
    path = tmp_path_factory.mktemp("ckpt") / "descore-tiny"
    scorer.save_pretrained(path)
    return scorer, path


def copy_checkpoint(path, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(path, target)
    return target


def test_round_trip_reproduces_rewards_exactly(saved, monkeypatch):
    scorer, path = saved
    assert not any(p.suffix in {".bin", ".pt", ".pth", ".pkl"} for p in path.iterdir())

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called while loading a DeScore checkpoint")

    monkeypatch.setattr(torch, "load", no_unpickling)
    loaded = DeScore.from_pretrained(path)
    assert loaded.config == scorer.config
    for kwargs in ({"think": False}, {"think": True}):
        a = scorer.score(VIDEOS, PROMPTS, **kwargs)
        b = loaded.score(VIDEOS, PROMPTS, **kwargs)
        assert torch.equal(a.rewards, b.rewards)
        assert a.cot_token_ids == b.cot_token_ids


def test_missing_head_is_an_error(saved, tmp_path):
    _, path = saved
    broken = copy_checkpoint(path, tmp_path)
    (broken / "score_head.safetensors").unlink()
    with pytest.raises(CheckpointError, match="score_head.safetensors is missing"):
        DeScore.from_pretrained(broken)


def test_head_of_wrong_hidden_size_is_an_error(saved, tmp_path):
    _, path = saved
    broken = copy_checkpoint(path, tmp_path)
    save_file({"score_head.weight": torch.zeros(1, 32)}, str(broken / "score_head.safetensors"))
    with pytest.raises(CheckpointError, match=r"shape \(1, 32\), expected \(1, 64\)"):
        DeScore.from_pretrained(broken)


def test_backbone_of_wrong_hidden_size_is_an_error(saved, tmp_path):
    _, path = saved
    broken = copy_checkpoint(path, tmp_path)
    config = json.loads((broken / "config.json").read_text())
    config["text_config"]["hidden_size"] = 96
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError):
        DeScore.from_pretrained(broken)


def test_missing_backbone_tensor_is_an_error(saved, tmp_path):
    _, path = saved
    broken = copy_checkpoint(path, tmp_path)
    weights = load_file(str(broken / "model.safetensors"))
    key = next(k for k in weights if "layers.1.mlp.up_proj" in k)
    del weights[key]
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="missing keys: .*layers.1.mlp.up_proj"):
        DeScore.from_pretrained(broken)


def test_tokenizer_without_query_token_is_an_error(saved, tmp_path):
    _, path = saved
    broken = copy_checkpoint(path, tmp_path)
    config = json.loads((broken / "descore_config.json").read_text())
    config["query_token"] = "<|not_there|>"
    (broken / "descore_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="no query token"):
        DeScore.from_pretrained(broken)


def test_config_validation():
    with pytest.raises(ConfigError, match="unknown key"):
        DeScoreConfig.from_dict({"sampling": {"fps": 2, "fsp": 3}})
    with pytest.raises(ConfigError, match="unknown key"):
        DeScoreConfig.from_dict({"temperature": 0.7})
    with pytest.raises(ConfigError, match="family"):
        DeScoreConfig(family="llava")
    with pytest.raises(ConfigError, match="fps"):
        DeScoreConfig(sampling={"fps": 0})
    with pytest.raises(ConfigError, match="together"):
        DeScoreConfig(reward_mean=1.0)


def test_normalisation_from_config(saved):
    scorer, _ = saved
    raw = scorer.score(VIDEOS[:2], PROMPTS[:2], think=False).rewards
    scorer.config.reward_mean, scorer.config.reward_std = 0.5, 2.0
    try:
        normalised = scorer.score(VIDEOS[:2], PROMPTS[:2], think=False).rewards
    finally:
        scorer.config.reward_mean = scorer.config.reward_std = None
    assert torch.allclose(normalised, (raw - 0.5) / 2.0)


def test_cli_score_and_compare(saved, tmp_path, capsys):
    scorer, path = saved
    files = []
    for i, frames in enumerate(VIDEOS[:2]):
        files.append(str(write_video(frames, tmp_path / f"v{i}.mp4", fps=2)))
    assert main(["score", *files, "--prompt", PROMPTS[0], "--model", str(path), "--no-think", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    expected = scorer.score(files, PROMPTS[0], think=False).rewards
    assert [r["video"] for r in rows] == files
    assert torch.allclose(torch.tensor([r["reward"] for r in rows]), expected, atol=1e-6)
    assert (
        main(["compare", *files, "--prompt", PROMPTS[0], "--model", str(path), "--no-think", "--json"]) == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["preferred"] == ("A" if expected[0] > expected[1] else "B")
    assert (
        main(["score", str(tmp_path / "missing.mp4"), "--prompt", "x", "--model", str(path), "--no-think"])
        == 2
    )
    assert "missing.mp4" in capsys.readouterr().err


def test_new_model_from_a_saved_base_checkpoint(tmp_path):
    from toyworld.tiny_models import save_qwen_vl

    base = save_qwen_vl(tmp_path / "base", "qwen2_5_vl", "tiny", seed=1)
    torch.manual_seed(0)
    scorer = DeScore.from_base_model(
        base,
        config={"dimensions": ["overall", "subject"], "sampling": {"min_pixels": 784, "max_pixels": 56 * 56}},
    )
    assert scorer.config.family == "qwen2_5_vl" and scorer.config.backbone == str(base)
    assert scorer.tokenizer.convert_tokens_to_ids(scorer.config.query_token) == scorer.model.query_token_id
    out = scorer.score(VIDEOS[:2], PROMPTS[:2], think=False)
    assert set(out.rewards_by_dimension) == {"overall", "subject"}
    assert torch.equal(out.rewards, out.rewards_by_dimension["overall"])
    assert not torch.equal(out.rewards_by_dimension["overall"], out.rewards_by_dimension["subject"])
    scorer.save_pretrained(tmp_path / "descore")
    again = DeScore.from_pretrained(tmp_path / "descore")
    assert torch.equal(again.score(VIDEOS[:2], PROMPTS[:2], think=False).rewards, out.rewards)
