"""Stage-1 cold start on tiny real Qwen3-VL backbones: learning, exact resume, bad data, LoRA export."""

from __future__ import annotations

import csv
import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from descore.errors import CheckpointError, ConfigError, DataError
from descore.evaluation import evaluate_pairs
from descore.pairs import load_pairs
from descore.scoring import DeScore
from descore.training import ColdStartConfig, ColdStartTrainer, add_lora, read_metrics
from descore.training.checkpointing import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from descore.training.data import (
    FrameStore,
    PairSchedule,
    RowSpec,
    collate_pairs,
    encode_rows,
    tokenize_pairs,
)
from descore.video_io import write_video

COLOURS = {
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.8, 0.2),
    "blue": (0.15, 0.2, 0.9),
    "yellow": (0.9, 0.85, 0.1),
}
TOY_SAMPLING = {"fps": 4.0, "min_frames": 2, "max_frames": 8, "min_pixels": 32 * 32, "max_pixels": 64 * 64}


def toy_clip(rng: np.random.Generator, colour: str, defective: bool) -> np.ndarray:
    """8 frames of 64x64: a coloured square moving on a gray background; the defect is heavy noise plus flicker
    (a whole-frame statistic a tiny vision tower picks up quickly)."""
    frames = np.empty((8, 64, 64, 3), np.float32)
    background = rng.uniform(0.35, 0.6)
    x, y, dx = rng.integers(4, 36), rng.integers(4, 36), rng.choice([-2, 2])
    for t in range(8):
        frame = np.full((64, 64, 3), background, np.float32)
        left = int(np.clip(x + dx * t, 0, 44))
        frame[y : y + 20, left : left + 20] = COLOURS[colour]
        if defective:
            frame += rng.normal(0, 0.18, frame.shape) + (0.25 if t % 2 else -0.1)
        frames[t] = frame
    return (frames.clip(0, 1) * 255).round().astype(np.uint8)


def cot_text(colour: str, defective: bool) -> str:
    quality = "noisy and they flicker" if defective else "clean and steady"
    return f"The video shows a {colour} square on a gray background. The frames are {quality}."


def write_toy_pairs(folder: Path, name: str, num_pairs: int, seed: int, num_ties: int = 0) -> Path:
    """A DeScore-format pair file: each pair is the same scene once clean and once defective (label: the clean one),
    plus ``num_ties`` pairs of two clean takes (label: same). Videos are written as mp4 next to the file."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(num_pairs + num_ties):
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        tie = i >= num_pairs
        clean_first = bool(rng.integers(2))
        flags = (False, False) if tie else ((False, True) if clean_first else (True, False))
        paths, cots = [], []
        for side, defective in zip("AB", flags):
            path = folder / "videos" / f"{name}_{i:04d}_{side}.mp4"
            write_video(toy_clip(rng, colour, defective), path, fps=4.0)
            paths.append(f"videos/{path.name}")
            cots.append(cot_text(colour, defective))
        rows.append(
            {
                "path_A": paths[0],
                "path_B": paths[1],
                "prompt": f"a {colour} square moving on a gray background",
                "Overall": "same" if tie else ("A" if clean_first else "B"),
                "CoT_A": cots[0],
                "CoT_B": cots[1],
            }
        )
    out = folder / f"{name}.csv"
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def tiny_scorer(seed: int = 0, size: str = "tiny"):
    from descore.scoring import DeScore
    from toyworld.tiny_models import build_qwen_vl, build_qwen_vl_processor

    torch.manual_seed(seed)
    return DeScore.from_backbone(
        build_qwen_vl("qwen3_vl", size, seed=seed),
        build_qwen_vl_processor("qwen3_vl", size),
        sampling=TOY_SAMPLING,
    )


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("toy_pairs")
    return {
        "train": write_toy_pairs(root, "train", 48, seed=0),
        "test": write_toy_pairs(root, "test", 40, seed=1),
        "small": write_toy_pairs(root, "small", 10, seed=2, num_ties=2),
    }


def config(train: Path, output_dir: Path, **overrides) -> ColdStartConfig:
    """Settings a tiny model learns with in seconds (the reference lr 2e-6 is for an 8B model)."""
    base = {
        "train_file": str(train),
        "output_dir": str(output_dir),
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "learning_rate": 1e-3,
        "batch_size": 8,
        "gradient_accumulation_steps": 1,
        "max_steps": 16,
        "mixed_precision": "no",
        "save_every": 0,
        "progress": False,
    }
    base.update(overrides)
    return ColdStartConfig(**base)


def accuracy(scorer: DeScore, pairs_file: Path, mode: str) -> float:
    evaluation = evaluate_pairs(scorer, load_pairs(pairs_file), mode=mode, batch_size=16, progress=False)
    return evaluation.dimensions["Overall"].without_ties.accuracy


# ---------------------------------------------------------------------------------------------------- learning
def test_cold_start_learns_think_and_think_free_paths_and_exports_a_loadable_model(toy_data, tmp_path):
    scorer = tiny_scorer(0)
    before = {mode: accuracy(scorer, toy_data["test"], mode) for mode in ("no_think", "given_cot")}
    embeddings_before = scorer.model.backbone.get_input_embeddings().weight.detach().clone()
    lm_head_before = scorer.model.backbone.lm_head.weight.detach().clone()
    cfg = config(toy_data["train"], tmp_path / "run", eval_file=str(toy_data["test"]), max_steps=10)
    result = ColdStartTrainer(cfg, scorer).train()

    after = {mode: e.dimensions["Overall"].without_ties.accuracy for mode, e in result.evaluations.items()}
    assert set(after) == {"no_think", "given_cot"}
    for mode, value in after.items():  # 40 held-out pairs (new scenes): chance is 0.5
        assert before[mode] <= 0.7 and value >= 0.9, (before, after)
    history = result.history
    assert len(history) == 10 and history[-1]["loss"] < history[0]["loss"]
    assert all(0 <= h["cot_kept"] <= 1 for h in history) and 0 < np.mean([h["cot_kept"] for h in history]) < 1

    # only the query token's embedding row was trained; the LM head was not
    trained = result.scorer.model.backbone
    changed = (
        (trained.get_input_embeddings().weight != embeddings_before).any(-1).nonzero().flatten().tolist()
    )
    assert changed == [scorer.model.query_token_id]
    assert torch.equal(trained.lm_head.weight, lm_head_before)

    # the export is a plain DeScore checkpoint (LoRA merged) that scores exactly like the in-memory model, and the
    # trainer's evaluation (frames decoded once, training input builder) equals DeScore.score on the files
    loaded = DeScore.from_pretrained(result.final_dir)
    assert not any("lora" in name for name, _ in loaded.model.named_parameters())
    some = load_pairs(toy_data["test"])[:6]
    for mode in ("no_think", "given_cot"):
        fresh = evaluate_pairs(loaded, some, mode=mode, batch_size=12, progress=False)
        trainer_eval = result.evaluations[mode]
        np.testing.assert_allclose(fresh.reward_a, trainer_eval.reward_a[:6], atol=1e-4)
        np.testing.assert_allclose(fresh.reward_b, trainer_eval.reward_b[:6], atol=1e-4)
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records[:10]] == list(range(1, 11)) and "eval/no_think/accuracy" in records[-1]


def test_think_free_baseline_trains_on_files_without_cot(toy_data, tmp_path):
    """cot_mask_prob 1.0: a purely discriminative model from the same pairs; CoT columns are not needed."""
    rows = list(csv.DictReader(toy_data["small"].open()))
    plain = toy_data["small"].with_name("plain.csv")
    with plain.open("w", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=["path_A", "path_B", "prompt", "Overall"], extrasaction="ignore"
        )
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(DataError, match="cot_mask_prob: 1.0"):
        ColdStartTrainer(config(plain, tmp_path / "a", max_steps=2)).load_data()
    # bf16 autocast here, while the other tests of this process run in float32: accelerate's process-wide state
    # from an earlier run must not block a run with other settings
    result = ColdStartTrainer(
        config(plain, tmp_path / "b", max_steps=2, batch_size=2, cot_mask_prob=1.0, mixed_precision="bf16"),
        tiny_scorer(0),
    ).train()
    assert [h["cot_kept"] for h in result.history] == [0.0, 0.0]
    pair = load_pairs(plain)[0]
    scores = DeScore.from_pretrained(result.final_dir).score([pair.video_a], [pair.prompt], think=False)
    assert scores.cots == [None] and torch.isfinite(scores.rewards).all()


# ---------------------------------------------------------------------------------------------------- resume
def test_resume_after_a_crash_replays_the_uninterrupted_losses_exactly(toy_data, tmp_path):
    """Dropout, CoT masking, accumulation, LM loss and BT-with-ties all active; crash after step 5, last checkpoint
    at step 4: the resumed run's losses and final weights equal those of a run that never stopped."""

    def settings(out: Path, **kw) -> ColdStartConfig:
        return config(
            toy_data["small"], out, lora_r=4, lora_alpha=8, lora_dropout=0.1, batch_size=2,
            gradient_accumulation_steps=2, max_steps=6, save_every=2, lm_loss_weight=0.5, ties="bt_ties", **kw,
        )  # fmt: skip

    straight = ColdStartTrainer(settings(tmp_path / "straight"), tiny_scorer(0)).train()

    class Crash(Exception):
        pass

    def crash(step: int, metrics: dict) -> None:
        if step == 5:
            raise Crash

    with pytest.raises(Crash):
        ColdStartTrainer(settings(tmp_path / "crashed"), tiny_scorer(0), callbacks=[crash]).train()
    assert [p.name for p in list_checkpoints(tmp_path / "crashed")] == [
        "checkpoint-00000002",
        "checkpoint-00000004",
    ]
    # leftovers of an interrupted save are never taken for a checkpoint
    (tmp_path / "crashed" / ".checkpoint-00000006.partial-1").mkdir()
    (tmp_path / "crashed" / "checkpoint-00000006").mkdir()
    assert latest_checkpoint(tmp_path / "crashed").name == "checkpoint-00000004"
    with pytest.raises(ConfigError, match="resume"):
        ColdStartTrainer(settings(tmp_path / "crashed"), tiny_scorer(0)).train()
    shutil.rmtree(tmp_path / "crashed" / "checkpoint-00000006")

    resumed = ColdStartTrainer(settings(tmp_path / "crashed", resume=True), tiny_scorer(0)).train()
    assert [h["step"] for h in resumed.history] == [5, 6]
    losses = [[r["loss"] for r in read_metrics(tmp_path / run)] for run in ("straight", "crashed")]
    assert losses[0] == losses[1] and len(losses[0]) == 6
    assert [h["loss"] for h in straight.history] == losses[0]
    state_a, state_b = straight.scorer.model.state_dict(), resumed.scorer.model.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def test_resume_refuses_a_changed_batch_layout(toy_data, tmp_path):
    run = tmp_path / "run"
    ColdStartTrainer(
        config(toy_data["small"], run, batch_size=2, max_steps=3, save_every=2), tiny_scorer(0)
    ).train()
    with pytest.raises(ConfigError, match="pairs_per_step"):
        ColdStartTrainer(
            config(toy_data["small"], run, batch_size=3, max_steps=3, resume=True), tiny_scorer(0)
        ).train()


def test_checkpoint_round_trip_restores_optimizer_and_scheduler(tmp_path):
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (s + 1))
    for _ in range(3):
        model(torch.randn(5, 4)).sum().backward()
        optimizer.step()
        scheduler.step()
    path = save_checkpoint(tmp_path, 3, model=model, optimizer=optimizer, scheduler=scheduler, state={"x": 1})
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
    other = torch.nn.Linear(4, 2)
    other_opt = torch.optim.AdamW(other.parameters(), lr=0.1)
    other_sched = torch.optim.lr_scheduler.LambdaLR(other_opt, lambda s: 1.0 / (s + 1))
    state = load_checkpoint(path, model=other, optimizer=other_opt, scheduler=other_sched)
    assert state["step"] == 3 and state["x"] == 1
    assert torch.equal(other.weight, model.weight) and other_sched.get_last_lr() == scheduler.get_last_lr()
    for key, value in optimizer.state_dict()["state"][0].items():
        assert torch.equal(other_opt.state_dict()["state"][0][key], value)
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(path, model=torch.nn.Linear(4, 3), optimizer=other_opt, scheduler=other_sched)
    for step in (6, 9):
        save_checkpoint(
            tmp_path, step, model=model, optimizer=optimizer, scheduler=scheduler, state={}, keep_last=2
        )
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-00000006", "checkpoint-00000009"]


# ---------------------------------------------------------------------------------------------------- bad data
def _rewrite(source: Path, target: Path, transform) -> Path:
    rows = list(csv.DictReader(source.open()))
    rows = transform(rows)
    with target.open("w", newline="") as handle:
        if rows:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return target


@pytest.mark.parametrize(
    "case, transform, message",
    [
        (
            "missing_column",
            lambda rows: [{k: v for k, v in r.items() if k != "prompt"} for r in rows],
            "prompt",
        ),
        ("missing_video", lambda rows: [{**r, "path_B": "videos/nope.mp4"} for r in rows], "video not found"),
        ("all_ties", lambda rows: [{**r, "Overall": "same"} for r in rows], "every one of the"),
        ("empty", lambda rows: [], "empty"),
    ],
)
def test_bad_data_gives_one_report_and_trains_nothing(toy_data, tmp_path, case, transform, message):
    bad = _rewrite(toy_data["small"], toy_data["small"].with_name(f"bad_{case}.csv"), transform)
    scorer = tiny_scorer(0)
    with pytest.raises(DataError, match=message) as err:
        ColdStartTrainer(config(bad, tmp_path / "out", max_steps=2), scorer).train()
    assert str(bad) in str(err.value)
    assert not (tmp_path / "out").exists()
    assert not any("lora" in name for name, _ in scorer.model.named_parameters())


def test_unreadable_videos_are_reported_together_before_training(toy_data, tmp_path):
    rows = list(csv.DictReader(toy_data["small"].open()))
    folder = toy_data["small"].parent
    for name in ("broken_1.mp4", "broken_2.mp4"):
        (folder / "videos" / name).write_bytes(b"not a video at all")
    bad = _rewrite(
        toy_data["small"],
        folder / "broken.csv",
        lambda rs: [
            {**rs[0], "path_A": "videos/broken_1.mp4"},
            {**rs[1], "path_B": "videos/broken_2.mp4"},
            *rs[2:],
        ],
    )
    with pytest.raises(DataError) as err:
        ColdStartTrainer(config(bad, tmp_path / "out", max_steps=2), tiny_scorer(0)).train()
    assert "broken_1.mp4" in str(err.value) and "broken_2.mp4" in str(err.value)
    assert not list_checkpoints(tmp_path / "out")
    assert rows


# ---------------------------------------------------------------------------------------------------- pieces
@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_5_vl"])
@pytest.mark.parametrize("freeze_vision", [False, True])
def test_lora_goes_to_the_language_model_only(family, freeze_vision, tmp_path):
    from toyworld.tiny_models import build_qwen_vl, build_qwen_vl_processor

    scorer = DeScore.from_backbone(build_qwen_vl(family, "tiny"), build_qwen_vl_processor(family, "tiny"))
    add_lora(scorer, config("x.csv", tmp_path, freeze_vision=freeze_vision))
    names = [n for n, p in scorer.model.named_parameters() if p.requires_grad]
    lora = [n for n in names if "lora_" in n]
    assert lora and all(".language_model." in n for n in lora)
    assert {n.rsplit(".lora_", 1)[0].rsplit(".", 1)[1] for n in lora} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    }  # fmt: skip
    visual = [n for n in names if ".visual." in n]
    assert bool(visual) != freeze_vision and all("lora" not in n for n in visual)
    others = sorted(set(names) - set(lora) - set(visual))
    assert others == ["backbone.model.language_model.embed_tokens.token_adapter.trainable_tokens_delta.default",
                      "score_head.weight"]  # fmt: skip
    assert all(p.dtype == torch.float32 for n, p in scorer.model.named_parameters() if p.requires_grad)


def test_pair_schedule_is_a_function_of_seed_and_step():
    schedule = PairSchedule(
        num_pairs=10, micro_batch=2, accumulation=2, world_size=2, seed=7, cot_mask_prob=0.5
    )
    assert schedule.pairs_per_step == 8 and schedule.steps_for_epochs(2) == 3
    plans = [[schedule.step_plan(step, rank) for rank in (0, 1)] for step in range(5)]
    again = PairSchedule(10, 2, 2, 2, 7, 0.5)
    assert all(
        np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        for step in range(5)
        for rank in (0, 1)
        for a, b in zip(plans[step][rank], again.step_plan(step, rank))
    )
    stream = np.concatenate([mb[0] for step in plans for rank in step for mb in rank])
    for epoch in range(4):  # every epoch is a permutation of all pairs
        assert sorted(stream[epoch * 10 : (epoch + 1) * 10].tolist()) == list(range(10))
    assert not np.array_equal(stream[:10], stream[10:20])
    keep = np.concatenate([mb[1] for step in plans for rank in step for mb in rank])
    assert 0.2 < keep.mean() < 0.8
    never = PairSchedule(10, 2, 1, 1, 7, 1.0).step_plan(0)[0][1]
    always = PairSchedule(10, 2, 1, 1, 7, 0.0).step_plan(0)[0][1]
    assert not never.any() and always.all()
    other_seed = PairSchedule(10, 2, 2, 2, 8, 0.5).step_plan(0, 0)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(plans[0][0], other_seed))


def test_collated_batch_matches_inference_inputs_and_lm_targets(toy_data, tmp_path):
    scorer = tiny_scorer(0)
    pairs = load_pairs(toy_data["small"])
    frames = FrameStore(scorer.config.sampling, cache_dir=tmp_path / "cache")
    frames.add_all(pairs.videos(), scorer.load_video, progress=False)
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == len(pairs.videos())
    reread = FrameStore(scorer.config.sampling, cache_dir=tmp_path / "cache")
    reread.add_all(pairs.videos(), lambda *a: pytest.fail("decoded again despite the cache"), progress=False)
    video = pairs[0].video_a
    assert torch.equal(
        reread.get(video).frames, scorer.load_video(str(video), None, scorer.config.sampling, 0).frames
    )

    examples = tokenize_pairs(pairs, "Overall", scorer.tokenizer, scorer.config.query_token, with_cot=True)
    end = scorer.tokenizer.convert_tokens_to_ids("<|im_end|>")
    q = scorer.model.query_token_id
    batch = collate_pairs(examples[:3], [True, False, True], frames, scorer.processor, scorer.config, q, end)
    ids = batch.inputs["input_ids"]
    assert ids.shape[0] == 6 and (ids[:, -1] == q).all()  # rows A0 A1 A2 B0 B1 B2, query token last
    assert batch.labels.tolist() == [examples[i].label for i in range(3)] and batch.cot_kept == 2
    # next-token targets: every CoT token of the kept rows, then the end of turn; row 1 and 4 (pair 1) have none
    assert sorted(set(batch.lm_rows.tolist())) == [0, 2, 3, 5]
    assert torch.equal(
        ids[batch.lm_rows, batch.lm_cols + 1][batch.lm_targets != end],
        batch.lm_targets[batch.lm_targets != end],
    )
    assert (ids[batch.lm_rows, batch.lm_cols + 1][batch.lm_targets == end] == q).all()
    assert len(batch.lm_targets) == sum(len(examples[i].cot_a) + len(examples[i].cot_b) + 2 for i in (0, 2))

    # the batch is exactly what DeScore.score builds for the same (video, prompt, CoT)
    with torch.no_grad():
        trained_layout = scorer.model(**batch.inputs).rewards[:, 0]
    paths = [str(examples[i].video_a) for i in range(3)] + [str(examples[i].video_b) for i in range(3)]
    cots = [pairs[0].cot_a, "", pairs[2].cot_a, pairs[0].cot_b, "", pairs[2].cot_b]
    reference = scorer.score(paths, [examples[i % 3].prompt for i in range(6)], cots=cots, progress=False)
    torch.testing.assert_close(trained_layout, reference.rewards, atol=1e-5, rtol=0)
    single = encode_rows(
        scorer.processor, scorer.config, q, [RowSpec(frames.get(paths[1]), examples[1].prompt, ())]
    )
    assert single["input_ids"].shape[0] == 1


def test_config_from_yaml_is_strict(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(
        "train_file: a.csv\noutput_dir: out\nlearning_rate: 2e-6\ncot_mask_prob: 1\nlog_with: []\n"
    )
    cfg = ColdStartConfig.from_yaml(good, {"lora_r": 16})
    assert cfg.learning_rate == 2e-6 and cfg.cot_mask_prob == 1.0 and cfg.lora_r == 16
    assert ColdStartConfig.from_dict(dataclasses.asdict(cfg)) == cfg
    for text, message in [
        ("train_file: a.csv\noutput_dir: o\nlora_rank: 8\n", "unknown key"),
        ("train_file: a.csv\noutput_dir: o\nlora_r: eight\n", "lora_r must be an integer"),
        ("train_file: a.csv\noutput_dir: o\nties: keep\n", "ties = 'keep'"),
        ("train_file: a.csv\noutput_dir: o\ncot_mask_prob: 1.5\n", "cot_mask_prob must be in"),
        ("train_file: a.csv\noutput_dir: o\ncot_mask_prob: 1.0\nlm_loss_weight: 0.1\n", "lm_loss_weight"),
        ("output_dir: o\n", "train_file is required"),
        ("- a\n- b\n", "mapping"),
    ]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            ColdStartConfig.from_yaml(bad)


def test_activation_checkpointing_changes_memory_not_results(toy_data, tmp_path):
    runs = [
        ColdStartTrainer(
            config(
                toy_data["small"],
                tmp_path / str(flag),
                batch_size=2,
                max_steps=2,
                gradient_checkpointing=flag,
            ),
            tiny_scorer(0),
        ).train()
        for flag in (False, True)
    ]
    np.testing.assert_allclose(
        [h["loss"] for h in runs[0].history], [h["loss"] for h in runs[1].history], rtol=1e-5
    )
    assert not runs[1].scorer.model.backbone.is_activation_checkpointing


def test_lm_loss_teaches_the_chain_of_thought(toy_data, tmp_path):
    """With lm_loss_weight > 0 the kept CoT rows are also a next-token objective (what keeps a small model able to
    write its CoT under BT training); with the default 0 it is not computed."""
    taught = ColdStartTrainer(
        config(
            toy_data["small"],
            tmp_path / "lm",
            batch_size=4,
            max_steps=10,
            cot_mask_prob=0.0,
            lm_loss_weight=1.0,
            learning_rate=5e-3,
        ),
        tiny_scorer(0),
    ).train()
    lm = [h["lm_loss"] for h in taught.history]  # from ln(vocabulary size) = 7.07 for the random model
    assert lm[-1] < lm[0] - 0.3 and lm == sorted(lm, reverse=True), lm
    assert all(h["loss"] == pytest.approx(h["bt_loss"] + h["lm_loss"]) for h in taught.history)
    plain = ColdStartTrainer(
        config(toy_data["small"], tmp_path / "bt", batch_size=4, max_steps=1), tiny_scorer(0)
    )
    assert plain.train().history[0]["lm_loss"] == 0.0


def test_a_file_with_several_labels_needs_the_dimension(toy_data, tmp_path):
    several = _rewrite(
        toy_data["small"],
        toy_data["small"].with_name("two.csv"),
        lambda rows: [{**r, "TA": r["Overall"]} for r in rows],
    )
    with pytest.raises(ConfigError, match="set `dimension`"):
        ColdStartTrainer(config(several, tmp_path / "out")).load_data()
    train, dimension, _ = ColdStartTrainer(config(several, tmp_path / "out", dimension="TA")).load_data()
    assert dimension == "TA" and len(train) == 10  # the two tied pairs are left out (ties: drop)
    with_ties, _, _ = ColdStartTrainer(
        config(several, tmp_path / "out", dimension="TA", ties="bt_ties")
    ).load_data()
    assert len(with_ties) == 12
