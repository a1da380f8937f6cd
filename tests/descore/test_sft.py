"""CoT SFT on tiny real Qwen3-VL backbones: target layout, learning, what is trained, exact resume, bad input, and the
`descore train sft` / `descore train dual-rl` command lines."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml

import descore.cli
from descore.errors import ConfigError, DataError
from descore.scoring import DeScore
from descore.training import read_metrics
from descore.training.data import FrameStore, RowSpec, encode_rows
from descore.training.sft import SFTConfig, SFTTrainer, completion_targets
from toyworld.dataset import build_dataset
from toyworld.scene import WorldConfig

SAMPLING = {"fps": 8.0, "min_frames": 2, "max_frames": 5, "min_pixels": 32 * 32, "max_pixels": 32 * 32}


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, Path]:
    """Toy-world pairs with brief CoTs (5-frame 32x32 videos) and a tiny base Qwen3-VL checkpoint."""
    from toyworld.tiny_models import save_qwen_vl

    root = tmp_path_factory.mktemp("sft")
    summary = build_dataset(
        root / "data",
        16,
        seed=4,
        config=WorldConfig(num_frames=5, height=32, width=32, fps=8),
        cot_style="brief",
        split_fractions=(0.75, 0.25, 0.0),
        progress=False,
    )
    return {
        "root": root,
        "train": summary.pair_files["train"],
        "test": summary.pair_files["test_id"],
        "base": save_qwen_vl(root / "base", "qwen3_vl", "tiny", seed=0),
    }


def config(toy: dict[str, Path], output_dir: Path, **overrides) -> SFTConfig:
    base = {
        "model": str(toy["base"]),
        "model_config": {"sampling": SAMPLING},
        "train_file": str(toy["train"]),
        "output_dir": str(output_dir),
        "lora_r": None,
        "learning_rate": 5e-3,
        "warmup_ratio": 0.0,
        "lr_scheduler": "constant",
        "batch_size": 8,
        "max_steps": 12,
        "mixed_precision": "no",
        "save_every": 0,
        "progress": False,
    }
    base.update(overrides)
    return SFTConfig(**base)


def test_targets_are_the_cot_tokens_then_the_end_of_turn(toy):
    scorer = DeScore.from_base_model(toy["base"], {"sampling": SAMPLING})
    frames = FrameStore(scorer.config.sampling)
    videos = [toy["root"] / "data" / "videos" / "train" / f"0000{i}_0.mp4" for i in range(2)]
    frames.add_all(videos, scorer.load_video, progress=False)
    cots = [[11, 12, 13], []]
    end = scorer.tokenizer.convert_tokens_to_ids("<|im_end|>")
    rows = [
        RowSpec(frames.get(v), "a red square moving left on a gray background", c)
        for v, c in zip(videos, cots)
    ]
    inputs = encode_rows(scorer.processor, scorer.config, scorer.model.query_token_id, rows)
    ids = inputs["input_ids"]
    r, c, t = completion_targets(ids.shape[1], [3, 0], [[11, 12, 13, end], [end]])
    assert r.tolist() == [0, 0, 0, 0, 1] and t.tolist() == [11, 12, 13, end, end]
    assert ids[r, c + 1][t != end].tolist() == [11, 12, 13]  # each position predicts the next token
    assert (
        ids[r, c + 1][t == end] == scorer.model.query_token_id
    ).all()  # the end of turn sits where the query goes
    cut = completion_targets(
        ids.shape[1], [3], [[11, 12, 13]]
    )  # a CoT cut at the token budget: no end of turn
    assert cut[2].tolist() == [11, 12, 13]
    with pytest.raises(ValueError, match="row 0"):
        completion_targets(ids.shape[1], [3], [[11]])


def test_sft_teaches_the_cot_and_leaves_the_head_alone(toy, tmp_path):
    before = SFTTrainer(
        config(toy, tmp_path / "zero", max_steps=1, learning_rate=1e-9, eval_file=str(toy["test"]))
    )
    start_loss = before.train().evaluation["loss"]
    scorer = DeScore.from_base_model(toy["base"], {"sampling": SAMPLING})
    head = scorer.model.score_head.weight.detach().clone()
    embed = scorer.model.backbone.get_input_embeddings().weight.detach().clone()
    cfg = config(toy, tmp_path / "run", eval_file=str(toy["test"]), eval_generate=2, eval_max_new_tokens=8)
    result = SFTTrainer(cfg, scorer).train()
    assert result.evaluation["loss"] < 0.6 * start_loss, (result.evaluation, start_loss)
    assert 0.0 <= result.evaluation["format"] <= 1.0 and 0.0 <= result.evaluation["token_accuracy"] <= 1.0
    history = read_metrics(tmp_path / "run")
    assert [h["step"] for h in history if "loss" in h] == list(range(1, 13))
    assert history[-1]["eval/loss"] == result.evaluation["loss"]
    loaded = DeScore.from_pretrained(result.final_dir)
    assert torch.equal(loaded.model.score_head.weight, head)
    assert not torch.equal(
        loaded.model.backbone.get_input_embeddings().weight, embed
    )  # lora_r null: all weights
    assert loaded.config.sampling.max_frames == SAMPLING["max_frames"]


def test_lora_sft_trains_adapters_only_and_exports_them_merged(toy, tmp_path):
    torch.manual_seed(0)
    scorer = DeScore.from_base_model(toy["base"], {"sampling": SAMPLING})
    head = scorer.model.score_head.weight.detach().clone()
    seen: dict[str, bool] = {}

    def record(step, _metrics):
        if step == 1:
            seen.update({n: p.requires_grad for n, p in scorer.model.named_parameters()})

    cfg = config(
        toy, tmp_path / "run", lora_r=4, lora_alpha=8, lora_dropout=0.0, freeze_vision=True, max_steps=2
    )
    result = SFTTrainer(cfg, scorer, callbacks=[record]).train()
    trained = {n for n, flag in seen.items() if flag}
    assert trained and all("lora_" in n or "trainable_tokens" in n for n in trained)
    assert torch.equal(result.scorer.model.score_head.weight, head)
    loaded = DeScore.from_pretrained(result.final_dir)
    assert not any("lora" in n for n, _ in loaded.model.named_parameters())


class Crash(RuntimeError):
    pass


def test_resume_replays_the_uninterrupted_losses(toy, tmp_path):
    straight = SFTTrainer(config(toy, tmp_path / "straight", max_steps=4, save_every=2)).train()

    def crash(step, _metrics):
        if step == 3:
            raise Crash

    with pytest.raises(Crash):
        SFTTrainer(config(toy, tmp_path / "crashed", max_steps=4, save_every=2), callbacks=[crash]).train()
    resumed = SFTTrainer(config(toy, tmp_path / "crashed", max_steps=4, save_every=2, resume=True)).train()
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history[2:]]
    with pytest.raises(ConfigError, match="layout changed"):
        SFTTrainer(
            config(toy, tmp_path / "crashed", max_steps=5, save_every=2, batch_size=4, resume=True)
        ).train()


def test_a_stream_fills_every_batch_with_fresh_examples_and_resumes_exactly(toy, tmp_path):
    """``streamed_per_batch`` rows of every micro-batch come from the stream, called with a new seed per step; a run
    resumed after a crash asks the stream for the same examples and replays the uninterrupted losses."""
    from toyworld.dataset import RenderedCoTStream

    rendered = RenderedCoTStream(WorldConfig(num_frames=5, height=32, width=32, fps=8))
    seeds: list[int] = []

    def stream(seed, count):
        seeds.append(seed)
        assert count == 3
        return rendered(seed, count)

    streamed = config(toy, tmp_path / "straight", max_steps=4, save_every=2, streamed_per_batch=3)
    straight = SFTTrainer(streamed, stream=stream).train()
    assert len(seeds) == len(set(seeds)) == 4
    file_only = SFTTrainer(config(toy, tmp_path / "file_only", max_steps=4)).train()
    assert all(a["tokens"] != b["tokens"] for a, b in zip(straight.history, file_only.history))
    first_run, seeds[:] = list(seeds), []

    def crash(step, _metrics):
        if step == 3:
            raise Crash

    crashed = config(toy, tmp_path / "crashed", max_steps=4, save_every=2, streamed_per_batch=3)
    with pytest.raises(Crash):
        SFTTrainer(crashed, callbacks=[crash], stream=stream).train()
    seeds.clear()
    resumed = SFTTrainer(
        config(toy, tmp_path / "crashed", max_steps=4, save_every=2, streamed_per_batch=3, resume=True),
        stream=stream,
    ).train()
    assert seeds == first_run[2:]
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history[2:]]
    with pytest.raises(ConfigError, match="needs a stream"):
        SFTTrainer(streamed)
    with pytest.raises(ConfigError, match="streamed_per_batch"):
        config(toy, tmp_path / "x", streamed_per_batch=8)


def test_the_vision_tower_learns_at_its_own_rate(toy, tmp_path):
    from descore.training.loop import make_adamw
    from descore.training.sft import make_trainable

    scorer = DeScore.from_base_model(toy["base"], {"sampling": SAMPLING})
    cfg = config(toy, tmp_path, vision_learning_rate=1e-4)
    make_trainable(scorer, cfg)
    language, vision = make_adamw(cfg, scorer.model, separate_head=False).param_groups
    assert (language["lr"], vision["lr"]) == (5e-3, 1e-4)
    assert {id(p) for p in vision["params"]} == {
        id(p) for p in scorer.model.backbone.model.visual.parameters()
    }
    with pytest.raises(ConfigError, match="vision_learning_rate"):
        config(toy, tmp_path, vision_learning_rate=0.0)


def test_bad_config_and_data_are_reported(toy, tmp_path):
    with pytest.raises(ConfigError, match="lora_r"):
        config(toy, tmp_path, lora_r=0)
    with pytest.raises(ConfigError, match="train_file is required"):
        SFTConfig(output_dir="out")
    good = tmp_path / "sft.yaml"
    good.write_text(f"train_file: {toy['train']}\noutput_dir: out\nlora_r: null\nlearning_rate: 1e-4\n")
    assert SFTConfig.from_yaml(good).lora_r is None
    with open(toy["train"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    no_cot = toy["train"].parent / "no_cot.csv"
    with open(no_cot, "w", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=[c for c in rows[0] if not c.startswith("CoT_")], extrasaction="ignore"
        )
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(DataError, match="CoT_A and CoT_B"):
        SFTTrainer(config(toy, tmp_path / "run", train_file=str(no_cot))).train()


def test_command_lines_run_sft_then_stage_two(toy, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(descore.cli, "_load_plugins", list)
    sft = {
        "model": str(toy["base"]),
        "model_config": {"sampling": SAMPLING},
        "train_file": str(toy["train"]),
        "output_dir": str(tmp_path / "sft"),
        "lora_r": None,
        "learning_rate": "1e-3",
        "max_steps": 2,
        "batch_size": 4,
        "mixed_precision": "no",
        "progress": False,
    }
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump(sft))
    assert (
        descore.cli.main(["train", "sft", "--config", str(tmp_path / "sft.yaml"), "--set", "save_every=0"])
        == 0
    )
    assert "trained 2 steps" in capsys.readouterr().out
    rl = {
        "model": str(tmp_path / "sft" / "final"),
        "train_file": str(toy["train"]),
        "eval_file": str(toy["test"]),
        "dimension": "Overall",
        "output_dir": str(tmp_path / "rl"),
        "lora_r": 4,
        "lora_alpha": 8,
        "group_size": 2,
        "pairs_per_step": 2,
        "max_new_tokens": 4,
        "max_steps": 1,
        "mixed_precision": "no",
        "eval_modes": ["no_think"],
        "eval_max_new_tokens": 4,
        "progress": False,
    }
    (tmp_path / "rl.yaml").write_text(yaml.safe_dump(rl))
    assert descore.cli.main(["train", "dual-rl", "--config", str(tmp_path / "rl.yaml")]) == 0
    out = capsys.readouterr().out
    assert "trained 1 steps" in out and "eval no_think Overall" in out
    assert DeScore.from_pretrained(tmp_path / "rl" / "final").config.sampling.max_frames == 5
