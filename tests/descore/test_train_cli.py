"""`descore train cold-start` and `descore eval` end to end on a tiny base Qwen3-VL checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import descore.cli
from descore.scoring import DeScore
from tests.descore.test_cold_start import TOY_SAMPLING, write_toy_pairs


@pytest.fixture(autouse=True)
def only_descore_commands(monkeypatch):
    """The commands of packages higher in the stack (toy world, recipes) are not under test here."""
    monkeypatch.setattr(descore.cli, "_load_plugins", list)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    from toyworld.tiny_models import save_qwen_vl

    root = tmp_path_factory.mktemp("cli")
    return {
        "root": root,
        "base": save_qwen_vl(root / "base", "qwen3_vl", "tiny", seed=0),
        "train": write_toy_pairs(root / "data", "train", 8, seed=5),
        "test": write_toy_pairs(root / "data", "test", 4, seed=6, num_ties=1),
    }


def test_help_lists_every_config_field(capsys):
    with pytest.raises(SystemExit) as done:
        descore.cli.main(["train", "cold-start", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for name in (
        "lora_r (int, default 64)",
        "cot_mask_prob",
        "lm_loss_weight",
        "ties",
        "train_file (str, required)",
    ):
        assert name in text


def test_train_from_a_base_checkpoint_then_evaluate(workspace, capsys):
    root = workspace["root"]
    config = {
        "model": str(workspace["base"]),
        "model_config": {"sampling": TOY_SAMPLING},
        "train_file": str(workspace["train"]),
        "eval_file": str(workspace["test"]),
        "output_dir": str(root / "run"),
        "lora_r": 4,
        "lora_alpha": 8,
        "learning_rate": "1e-3",
        "batch_size": 2,
        "gradient_accumulation_steps": 1,
        "mixed_precision": "no",
        "save_every": 2,
        "progress": False,
    }
    path = root / "stage1.yaml"
    path.write_text(yaml.safe_dump(config))
    assert descore.cli.main(["train", "cold-start", "--config", str(path), "--set", "max_steps=3"]) == 0
    out = capsys.readouterr().out
    assert "trained 3 steps" in out and "eval no_think Overall" in out and "eval given_cot Overall" in out
    final = root / "run" / "final"
    scorer = DeScore.from_pretrained(final)
    assert scorer.config.sampling.fps == TOY_SAMPLING["fps"]
    assert [p.name for p in (root / "run").glob("checkpoint-*")] == ["checkpoint-00000002"]

    # a second run into the same folder must not silently start over
    assert descore.cli.main(["train", "cold-start", "--config", str(path), "--set", "max_steps=3"]) == 2
    assert "set resume: true" in capsys.readouterr().err

    for flag, mode in (("--no-think", "no_think"), ("--given-cot", "given_cot")):
        out_dir = root / f"eval_{mode}"
        args = ["eval", "--model", str(final), "--pairs", str(workspace["test"]), flag, "--out", str(out_dir)]
        assert descore.cli.main([*args, "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["mode"] == mode and summary["num_pairs"] == 5 and summary["model"] == str(final)
        report = summary["dimensions"]["Overall"]
        assert report["with_ties"]["human_ties"] == 1 and report["with_ties"]["epsilon"] is not None
        assert report["without_ties"]["num_pairs"] == 4
        assert (out_dir / "results.csv").is_file() and (out_dir / "summary.json").is_file()

    assert descore.cli.main(["eval", "--model", str(final), "--pairs", str(workspace["test"]), "--think",
                             "--max-new-tokens", "4", "--dimension", "Overall", "--out", str(root / "think")]) == 0  # fmt: skip
    assert "Overall: accuracy w/o ties" in capsys.readouterr().out


def test_cli_errors_are_one_clear_line(workspace, capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"train_file: {workspace['train']}\noutput_dir: {tmp_path / 'o'}\nlora_rank: 4\n")
    assert descore.cli.main(["train", "cold-start", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "unknown key(s) ['lora_rank']" in err and "Traceback" not in err
    assert descore.cli.main(["train", "cold-start", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert descore.cli.main(["train", "cold-start", "--config", str(bad), "--set", "lora_r"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    args = ["eval", "--model", str(workspace["base"]), "--pairs", str(workspace["test"]), "--dimension", "TA"]
    assert descore.cli.main(args) == 2
    assert "TA" in capsys.readouterr().err
