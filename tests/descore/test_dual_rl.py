"""Stage 2 (dual-objective RL) on tiny real Qwen3-VL backbones: rollout rewards, the first importance ratio, the
reference policy, learning from the rollout reward, exact resume, bad configs and data."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from descore.answer import format_answer
from descore.errors import ConfigError, DataError
from descore.scoring import DeScore
from descore.training import read_metrics
from descore.training.dual_rl import DualRLConfig, DualRLTrainer
from descore.training.rewards import RewardRule, format_reward, length_reward, quality_reward
from toyworld.dataset import build_dataset
from toyworld.scene import WorldConfig

SAMPLING = {"fps": 8.0, "min_frames": 2, "max_frames": 5, "min_pixels": 32 * 32, "max_pixels": 32 * 32}
TRUTH = {"subject": 2, "dynamics": 1, "camera": None, "environment": 2, "style": 0}


# ---------------------------------------------------------------------------------------------------- rewards
def test_quality_reward_counts_matching_subscores_and_na():
    assert quality_reward(dict(TRUTH), TRUTH) == 1.0
    assert quality_reward(None, TRUTH) == 0.0
    off = {**TRUTH, "dynamics": 2, "camera": 2}  # one wrong score, N/A answered with a score
    assert quality_reward(off, TRUTH, "exact") == pytest.approx(3 / 5)
    assert quality_reward(off, TRUTH, "distance") == pytest.approx((1 + 0.5 + 0 + 1 + 1) / 5)
    assert quality_reward({**TRUTH, "style": 2}, TRUTH, "distance") == pytest.approx(4 / 5)
    with pytest.raises(ConfigError, match="camera"):
        quality_reward(TRUTH, {k: v for k, v in TRUTH.items() if k != "camera"})


def test_length_reward_follows_the_reference_steps_and_the_linear_ramp():
    steps = [length_reward(n) for n in (0, 499, 500, 999, 1000, 1500, 1999, 2000, 9000)]
    assert steps == [0.0, 0.0, 0.2, 0.2, 0.4, 0.6, 0.6, 1.0, 1.0]
    ramp = [length_reward(n, "linear", (500, 2000)) for n in (100, 500, 1250, 2000, 3000)]
    assert ramp == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_reward_rule_weights_the_components_of_a_chain_of_thought():
    cot = "Subject: fine -> 2. Style: it flickers -> 0.\n" + format_answer(TRUTH)
    rule = RewardRule(length_unit="tokens", length_thresholds=(10, 20), length_values=(0.0, 0.5, 1.0))
    reward = rule(cot, 15, TRUTH)
    assert (reward.quality, reward.format, reward.length) == (1.0, 1.0, 0.5)
    assert reward.total == pytest.approx(0.7 + 0.1 + 0.2 * 0.5)
    broken = rule(cot.replace("</answer>", ""), 25, TRUTH)
    assert (broken.quality, broken.format, broken.length, broken.answer) == (0.0, 0.0, 1.0, None)
    assert format_reward(reward.answer) == 1.0 and reward.answer.dimensional_scores == TRUTH


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"quality_weight": -1.0}, "quality_weight"),
        ({"quality_weight": 0.0, "format_weight": 0.0, "length_weight": 0.0}, "at least one"),
        ({"length_thresholds": (10, 5), "length_values": (0, 1, 1)}, "increasing"),
        ({"length_thresholds": (10,), "length_values": (0, 0.5, 1)}, r"n \+ 1 values"),
        ({"length_shape": "linear", "length_thresholds": (1, 2, 3)}, "2 thresholds"),
        ({"length_values": (0, 0.2, 0.4, 0.6, 2.0)}, r"\[0, 1\]"),
    ],
)
def test_reward_rule_rejects_bad_settings(fields, message):
    with pytest.raises(ConfigError, match=message):
        RewardRule(**fields)


# ---------------------------------------------------------------------------------------------------- trainer
@pytest.fixture(scope="module")
def toy_pairs(tmp_path_factory) -> Path:
    """A small toy-world pair file (brief CoTs, ground-truth sub-scores) with short 5-frame, 32x32 videos."""
    root = tmp_path_factory.mktemp("toy_rl")
    summary = build_dataset(
        root,
        12,
        seed=3,
        config=WorldConfig(num_frames=5, height=32, width=32, fps=8),
        cot_style="brief",
        split_fractions=(1.0, 0.0, 0.0),
        progress=False,
    )
    return summary.pair_files["train"]


def tiny_scorer(seed: int = 0) -> DeScore:
    from toyworld.tiny_models import build_qwen_vl, build_qwen_vl_processor

    torch.manual_seed(seed)
    return DeScore.from_backbone(
        build_qwen_vl("qwen3_vl", "tiny", seed=seed),
        build_qwen_vl_processor("qwen3_vl", "tiny"),
        sampling=SAMPLING,
    )


def config(train: Path, output_dir: Path, **overrides) -> DualRLConfig:
    """Short rollouts from a random tiny model: only the length term varies, so it is the whole reward here."""
    base = {
        "train_file": str(train),
        "output_dir": str(output_dir),
        "dimension": "Overall",
        "lora_r": 8,
        "lora_alpha": 16,
        "group_size": 4,
        "pairs_per_step": 2,
        "rollout_batch_size": 4,
        "max_new_tokens": 6,
        "length_thresholds": [0, 30],
        "length_shape": "linear",
        "learning_rate": 3e-3,
        "head_learning_rate": 3e-3,
        "bt_weight": 0.5,
        "kl_coef": 0.1,
        "mini_batches": 2,
        "max_steps": 3,
        "mixed_precision": "no",
        "save_every": 0,
        "progress": False,
    }
    base.update(overrides)
    return DualRLConfig(**base)


class Crash(RuntimeError):
    pass


def test_first_ratio_is_one_and_resume_after_a_crash_replays_the_uninterrupted_run(toy_pairs, tmp_path):
    """Old log-probs come from the same micro-batches as the update, so before the first optimizer step of every
    rollout step the importance ratio is exactly 1; the second mini-batch is trained after an update, so its ratio
    moves. A run killed after step 2 (checkpoint every 2) and resumed logs the metrics of a run that never stopped
    and ends with the same weights; the export is a plain (merged) DeScore checkpoint."""
    keys = ("loss", "pg_loss", "bt_loss", "kl", "reward", "ratio_mean", "clip_fraction", "cot_tokens")
    straight = DualRLTrainer(
        config(toy_pairs, tmp_path / "straight", max_steps=4, save_every=2), tiny_scorer(0)
    ).train()
    history = straight.history
    assert [h["ratio_first_update_max_dev"] for h in history] == [0.0] * 4
    assert any(h["ratio_mean"] != 1.0 for h in history) and history[-1]["kl"] > 0
    logged = read_metrics(tmp_path / "straight")
    for key in (
        "reward",
        "reward_quality",
        "reward_format",
        "reward_length",
        "kl",
        "clip_fraction",
        "bt_accuracy",
        "bt_loss",
        "pg_loss",
        "cot_tokens",
        "truncated",
        "lr",
        "grad_norm",
    ):
        assert key in logged[0], key

    def crash(step, _metrics):
        if step == 3:
            raise Crash

    with pytest.raises(Crash):
        DualRLTrainer(
            config(toy_pairs, tmp_path / "crashed", max_steps=4, save_every=2),
            tiny_scorer(0),
            callbacks=[crash],
        ).train()
    with pytest.raises(ConfigError, match="resume"):
        DualRLTrainer(
            config(toy_pairs, tmp_path / "crashed", max_steps=4, save_every=2), tiny_scorer(0)
        ).train()
    resumed = DualRLTrainer(
        config(toy_pairs, tmp_path / "crashed", max_steps=4, save_every=2, resume=True), tiny_scorer(0)
    ).train()
    assert [h["step"] for h in resumed.history] == [3, 4]
    for a, b in zip(history[2:], resumed.history):
        assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
    assert [m["step"] for m in read_metrics(tmp_path / "crashed")] == [1, 2, 3, 4]
    state_a, state_b = straight.scorer.model.state_dict(), resumed.scorer.model.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    loaded = DeScore.from_pretrained(straight.final_dir)
    assert not any("lora" in name for name, _ in loaded.model.named_parameters())


def test_one_update_moves_the_policy_toward_high_advantage_rollouts_and_bt_trains_head_and_backbone(
    toy_pairs, tmp_path
):
    """The pieces of a step, by hand: sample groups, score the old and the reference policy, take one update. LoRA
    starts at zero, so the policy is the reference (KL exactly 0). A GRPO step raises the advantage-weighted
    log-likelihood of the sampled CoTs; the BT loss on paired rollouts sends gradient to the head and the LoRA
    weights, and a step on the head lowers it."""
    from accelerate import Accelerator

    from descore.training.cold_start import add_lora
    from descore.training.data import FrameStore
    from descore.training.sft import CompletionForward

    cfg = config(
        toy_pairs,
        tmp_path / "run",
        kl_coef=0.0,
        bt_weight=0.0,
        pairs_per_step=3,
        mini_batches=1,
        micro_batch_pairs=3,
    )
    trainer, scorer = DualRLTrainer(cfg), tiny_scorer(0)
    examples, _, _ = trainer.load_data()
    pairs = [p for p in examples if p.label != 0][:3]
    peft_model = add_lora(scorer, cfg)
    frames = FrameStore(scorer.config.sampling)
    frames.add_all([v for p in pairs for v in (p.video_a, p.video_b)], scorer.load_video, progress=False)
    torch.manual_seed(0)
    groups = trainer.rollout(scorer, frames, pairs)
    assert len(groups) == 6 and all(len(g) == cfg.group_size for g in groups)
    for group in groups:
        assert abs(sum(r.advantage for r in group)) < 1e-5  # centred within the group
    (batch,) = trainer.micro_batches(scorer, frames, pairs, groups)
    assert batch.num_rows == 2 * 3 * cfg.group_size and len(batch.labels) == 3 * cfg.group_size
    assert (batch.inputs["input_ids"][:, -1] == scorer.model.query_token_id).all()

    accelerator, forward = Accelerator(cpu=True), CompletionForward(scorer.model)
    batch.old_log_probs = trainer.policy_log_probs(forward, batch, accelerator)
    with peft_model.disable_adapter():
        batch.ref_log_probs = trainer.policy_log_probs(forward, batch, accelerator)
    assert torch.equal(batch.old_log_probs, batch.ref_log_probs)
    counts = (len(batch.targets), batch.num_rows, len(batch.labels))
    trainable = [p for p in scorer.model.parameters() if p.requires_grad]
    loss, stats = trainer.micro_loss(forward, batch, accelerator, *counts)
    assert stats["kl_sum"] == 0.0 and stats["clipped"] == 0.0 and stats["bt_loss"] == 0.0
    loss.backward()
    torch.optim.SGD(trainable, lr=1e-3).step()
    after = trainer.policy_log_probs(forward, batch, accelerator)
    assert float((batch.advantages * (after - batch.old_log_probs)).sum()) > 0

    scorer.model.zero_grad()
    bt_trainer = DualRLTrainer(config(toy_pairs, tmp_path / "bt", bt_weight=1.0))
    batch.advantages.zero_()
    loss, stats = bt_trainer.micro_loss(forward, batch, accelerator, *counts)
    loss.backward()
    lora_grads = [p.grad for n, p in scorer.model.named_parameters() if "lora_B" in n]
    assert all(g is not None for g in lora_grads) and sum(float(g.abs().sum()) for g in lora_grads) > 0
    torch.optim.SGD(scorer.model.score_head.parameters(), lr=0.1).step()
    _, stats_after = bt_trainer.micro_loss(forward, batch, accelerator, *counts)
    assert stats_after["bt_loss"] < stats["bt_loss"]


# ---------------------------------------------------------------------------------------------------- bad input
def test_config_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="group_size"):
        DualRLConfig(train_file="a.csv", output_dir="out", group_size=1)
    with pytest.raises(ConfigError, match="multiple of mini_batches"):
        DualRLConfig(train_file="a.csv", output_dir="out", pairs_per_step=3, mini_batches=2)
    with pytest.raises(ConfigError, match="micro_batch_pairs"):
        DualRLConfig(
            train_file="a.csv", output_dir="out", pairs_per_step=8, mini_batches=2, micro_batch_pairs=3
        )
    with pytest.raises(ConfigError, match="length_values"):
        DualRLConfig(train_file="a.csv", output_dir="out", length_values=[0.0, 1.0])
    good = tmp_path / "rl.yaml"
    good.write_text(
        "train_file: a.csv\noutput_dir: out\nlength_thresholds: [100, 200]\nlength_shape: linear\n"
    )
    assert DualRLConfig.from_yaml(good).reward_rule().length_thresholds == (100.0, 200.0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train_file: a.csv\noutput_dir: out\ngroup_sise: 4\n")
    with pytest.raises(ConfigError, match="group_sise"):
        DualRLConfig.from_yaml(bad)


def test_pairs_without_ground_truth_subscores_are_refused(toy_pairs, tmp_path):
    with open(toy_pairs, newline="") as handle:
        rows = list(csv.DictReader(handle))
    kept = [c for c in rows[0] if not c.startswith("gt_")]
    stripped = toy_pairs.parent / "no_gt.csv"
    with open(stripped, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=kept, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(DataError, match="ground-truth sub-scores"):
        DualRLTrainer(config(stripped, tmp_path / "run"), tiny_scorer(0)).train()
    assert not (tmp_path / "run" / "final").exists()


def test_stage_two_starts_from_a_descore_checkpoint(toy_pairs, tmp_path):
    from toyworld.tiny_models import save_qwen_vl

    base = save_qwen_vl(tmp_path / "base", "qwen3_vl", "tiny")
    with pytest.raises(ConfigError, match="not a DeScore checkpoint"):
        DualRLTrainer(config(toy_pairs, tmp_path / "run", model=str(base))).train()
    assert math.isclose(config(toy_pairs, tmp_path).reward_rule().quality_weight, 0.7)
