"""The shared training loop: exact resume, YAML configs and the CLI, EMA, sample videos, GRPO modes, offline DPO."""

import csv
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from descore.errors import ConfigError
from descore.video_io import read_video, write_video
from recipes.base import RecipeTrainer
from recipes.config import RecipeConfig, RewardSpec, load_config
from recipes.dpo import DPOConfig, DPOTrainer
from recipes.draft import DRaFTTrainer
from recipes.grpo import GRPOConfig, GRPOTrainer
from recipes.lora import LoraSpec
from recipes.rwr import RWRConfig, RWRTrainer
from reward_guidance.protocol import CallableReward
from tests.recipes.conftest import PROMPTS, tiny_spec
from tests.recipes.test_recipes import make_config, redness, reward
from toyworld.tiny_models.video_pipelines import save_video_pipeline

CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "configs"


def _without_time(history):
    return [{k: v for k, v in m.items() if not k.startswith("time/")} for m in history]


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("recipe", ["grpo", "dpo"])
def test_resume_after_interruption_reproduces_the_run(recipe, make_pipeline, tmp_path):
    changes = {"num_updates": 3, "checkpoint_every": 2, "ema_decay": 0.5, "prompts_per_update": 2}
    trainer_cls = {"grpo": GRPOTrainer, "dpo": DPOTrainer}[recipe]
    full = trainer_cls(
        make_config(recipe, "wan2.1", tmp_path / "full", **changes),
        pipe=make_pipeline("wan2.1"),
        reward=reward(),
    ).train()

    config = make_config(recipe, "wan2.1", tmp_path / "cut", **changes)
    first = trainer_cls(config, pipe=make_pipeline("wan2.1"), reward=reward())
    original = first.run_update

    def stop_at_third(update):
        if update == 2:
            raise Interrupted
        return original(update)

    first.run_update = stop_at_third
    with pytest.raises(Interrupted):
        first.train()
    resumed = trainer_cls(config, pipe=make_pipeline("wan2.1"), reward=reward())
    assert resumed.update == 2
    history = resumed.train()
    assert _without_time(history) == _without_time(full)
    logged = [
        json.loads(line) for line in (Path(config.output_dir) / "metrics.jsonl").read_text().splitlines()
    ]
    assert [m["update"] for m in logged] == [1, 2, 3]


def test_yaml_examples_parse_and_errors_name_the_file(tmp_path):
    import yaml

    for path in sorted(CONFIGS.glob("*.yaml")):
        recipe = path.stem
        cls = {"grpo": GRPOConfig, "rwr": RWRConfig, "dpo": DPOConfig}.get(recipe)
        if cls is None:
            from recipes.draft import DRaFTConfig as cls
        for example in yaml.safe_load(path.read_text()):
            config = load_config(cls, path, example=example)
            assert isinstance(config, cls)
    bad = tmp_path / "bad.yaml"
    bad.write_text("prompts: [a]\nlearning_rat: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*learning_rat"):
        load_config(GRPOConfig, bad)
    bad.write_text("prompts: [a]\nlora: {rank: 0}\n")
    with pytest.raises(ConfigError, match="rank"):
        load_config(GRPOConfig, bad)
    bad.write_text("prompts: [a]\nsampling: {heigth: 32}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml \[sampling\].*heigth"):
        load_config(GRPOConfig, bad)


def redness_reward():
    """Factory used by the CLI test's YAML (reward.kind callable)."""
    return reward()


def test_cli_runs_from_yaml(tmp_path, capsys):
    pipeline_dir = save_video_pipeline(tmp_path / "pipe", "wan2.1")
    spec = dataclasses.asdict(tiny_spec("wan2.1"))
    config = {
        "pretrained": str(pipeline_dir),
        "output_dir": str(tmp_path / "run"),
        "prompts": PROMPTS,
        "sampling": {k: v for k, v in spec.items() if v is not None},
        "lora": {"rank": 2, "alpha": 2},
        "reward": {
            "kind": "callable",
            "factory": "tests.recipes.test_training_loop:redness_reward",
            "options": {},
        },
        "num_updates": 1,
        "prompts_per_update": 1,
        "group_size": 2,
        "sample_batch_size": 2,
        "sample_every": 1,
        "progress": False,
    }
    path = tmp_path / "rwr.yaml"
    import yaml

    path.write_text(yaml.safe_dump({"example": config}))
    assert RWRTrainer.main(["--config", str(path), "--example", "example", "--set", "beta=0.5"]) == 0
    run = tmp_path / "run"
    assert (run / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert len(list(run.glob("checkpoint-*"))) == 1
    assert json.loads((run / "config.json").read_text())["beta"] == 0.5
    video = read_video(run / "samples" / "update-000001" / "00.mp4")
    assert video.frames.shape == (9, 3, 32, 32)
    assert RWRTrainer.main(["--config", str(path), "--example", "example", "--set", "lora.rank=0"]) == 2
    assert "lora.rank" in capsys.readouterr().err


def test_grpo_modes_fast_window_no_cfg_cps_and_timestep_fraction(make_pipeline, tmp_path):
    config = make_config(
        "grpo",
        "wan2.1",
        tmp_path,
        sde_window=1,
        sde_window_range=[1, 3],
        timestep_fraction=1.0,
        sde_form="cps",
        sampling=tiny_spec("wan2.1", guidance_scale=1.0),
        optimizer_steps_per_update=1,
    )
    trainer = GRPOTrainer(config, pipe=make_pipeline("wan2.1"), reward=reward())
    windows = {tuple(trainer.sde_steps(u)) for u in range(20)}
    assert windows == {(1,)}  # CPS: the last step (2) is deterministic, so the window can only be step 1
    steps = trainer.sde_steps(0)
    samples = trainer.sample_groups(0, form="cps", sde_steps=steps)
    assert samples.trajectories[0].training_steps() == steps
    assert samples.trajectories[0].context.conditioning.negative is None  # no-CFG: one branch
    metrics = trainer.run_update(0)
    assert metrics["train/first_step_ratio_deviation"] == 0.0
    with pytest.raises(ConfigError, match="sde_window"):
        make_config("grpo", "wan2.1", tmp_path, sde_window=5)


def test_grpo_two_optimizer_steps_move_the_ratio_and_clip(make_pipeline, tmp_path):
    config = make_config(
        "grpo",
        "ltx",
        tmp_path,
        prompts_per_update=2,
        optimizer_steps_per_update=2,
        sample_batch_size=2,
        learning_rate=5e-2,
        clip_range=1e-5,
    )
    history = GRPOTrainer(config, pipe=make_pipeline("ltx"), reward=reward()).train()
    metrics = history[0]
    assert metrics["train/first_step_ratio_deviation"] == 0.0
    assert (
        metrics["train/ratio_max"] > 1 or metrics["train/ratio_min"] < 1
    )  # the second step sees a new policy
    assert metrics["train/clip_frac"] > 0


def test_rwr_best_of_group_weights_only_the_best(make_pipeline, tmp_path):
    config = make_config(
        "rwr", "hunyuanvideo", tmp_path, best_of_group=True, group_size=3, sample_batch_size=3
    )
    trainer = RWRTrainer(config, pipe=make_pipeline("hunyuanvideo"), reward=reward())
    metrics = trainer.run_update(0)
    assert metrics["train/effective_samples"] == pytest.approx(1.0)
    assert metrics["train/weight_max"] == pytest.approx(3.0)


@pytest.mark.parametrize("recipe", ["rwr", "dpo"])
def test_inner_epochs_take_one_optimizer_step_per_pass(recipe, make_pipeline, tmp_path):
    trainer_class = {"rwr": RWRTrainer, "dpo": DPOTrainer}[recipe]
    trained = {}
    for epochs in (1, 3):
        config = make_config(
            recipe, "wan2.1", tmp_path / str(epochs), group_size=3, sample_batch_size=3, inner_epochs=epochs
        )
        trainer = trainer_class(config, pipe=make_pipeline("wan2.1"), reward=reward())
        metrics = trainer.run_update(0)
        assert [int(trainer.optimizer.state[p]["step"]) for p in trainer.params] == [epochs] * len(
            trainer.params
        )
        assert metrics["train/grad_norm"] > 0
        trained[epochs] = [p.detach().clone() for p in trainer.params]
    # Same samples, and the same noise in the first pass: the later passes move the LoRA further.
    assert not all(torch.equal(a, b) for a, b in zip(trained[1], trained[3]))
    with pytest.raises(ConfigError, match="inner_epochs"):
        make_config(recipe, "wan2.1", tmp_path, inner_epochs=0)


def test_online_dpo_all_pairs_with_the_winner_sft_term(make_pipeline, tmp_path):
    config = make_config(
        "dpo", "wan2.1", tmp_path, group_size=3, sample_batch_size=3, pairing="all", sft_weight=2.0
    )
    metrics = DPOTrainer(config, pipe=make_pipeline("wan2.1"), reward=reward()).run_update(0)
    assert metrics["train/pairs"] == 3  # every pair of 3 distinct rewards
    assert metrics["train/sft_loss"] == pytest.approx(2.0 * metrics["train/model_error_winner"])
    assert metrics["train/loss"] == pytest.approx(math.log(2))  # the policy is still the reference
    # The winner term reaches the gradient: the same update without it steps differently.
    pure = dataclasses.replace(config, sft_weight=0.0)
    without = DPOTrainer(pure, pipe=make_pipeline("wan2.1"), reward=reward()).run_update(0)
    assert without["train/pairs"] == 3 and without["train/sft_loss"] == 0.0
    assert without["train/grad_norm"] != pytest.approx(metrics["train/grad_norm"], rel=1e-3)
    with pytest.raises(ConfigError, match="sft_weight"):
        make_config("dpo", "wan2.1", tmp_path, sft_weight=-1.0)


def test_offline_dpo_from_a_pair_file(make_pipeline, tmp_path):
    g = torch.Generator().manual_seed(0)
    rows = []
    for i, prompt in enumerate(PROMPTS):
        red = torch.rand(9, 3, 32, 32, generator=g) * 0.3
        red[:, 0] += 0.6
        blue = torch.rand(9, 3, 32, 32, generator=g) * 0.3
        blue[:, 2] += 0.6
        write_video(red, tmp_path / f"red{i}.mp4", fps=8)
        write_video(blue, tmp_path / f"blue{i}.mp4", fps=8)
        rows.append({"path_A": f"blue{i}.mp4", "path_B": f"red{i}.mp4", "prompt": prompt, "Overall": "B"})
    pair_file = tmp_path / "pairs.csv"
    with pair_file.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    config = DPOConfig(
        output_dir=str(tmp_path / "dpo"),
        sampling=tiny_spec("cogvideox"),
        lora=LoraSpec(rank=2, alpha=2),
        pair_source="offline",
        pair_file=str(pair_file),
        pairs_per_update=2,
        num_updates=1,
        progress=False,
        learning_rate=1e-2,
    )
    trainer = DPOTrainer(config, pipe=make_pipeline("cogvideox"), reward=reward())
    assert trainer.prompts == PROMPTS
    history = trainer.train()
    assert history[0]["train/pairs"] == 2 and "train/implicit_accuracy" in history[0]
    assert history[0]["train/grad_norm"] > 0


def test_base_trainer_is_abstract_and_checks_types(make_pipeline, tmp_path):
    with pytest.raises(ConfigError, match="GRPOConfig"):
        GRPOTrainer(make_config("rwr", "wan2.1", tmp_path), pipe=make_pipeline("wan2.1"), reward=reward())
    config = RecipeConfig(
        output_dir=str(tmp_path / "base"),
        prompts=PROMPTS,
        sampling=tiny_spec("wan2.1"),
        lora=LoraSpec(rank=2, alpha=2),
    )
    trainer = RecipeTrainer(config, pipe=make_pipeline("wan2.1"), reward=redness)
    with pytest.raises(NotImplementedError):
        trainer.run_update(0)


@pytest.mark.filterwarnings("ignore:overriding the checkpoint's sampling settings")
def test_descore_reward_from_a_checkpoint_think_free_by_default(make_pipeline, tmp_path):
    from descore.scoring import DeScore
    from toyworld.tiny_models import build_qwen_vl, build_qwen_vl_processor

    torch.manual_seed(0)
    scorer = DeScore.from_backbone(
        build_qwen_vl("qwen3_vl", "tiny", seed=0),
        build_qwen_vl_processor("qwen3_vl", "tiny"),
        sampling={"fps": 2.0, "min_frames": 2, "max_frames": 8, "min_pixels": 32 * 32, "max_pixels": 64 * 64},
    )
    scorer.save_pretrained(tmp_path / "descore")
    config = make_config(
        "grpo",
        "wan2.1",
        tmp_path,
        reward=RewardSpec(kind="descore", path=str(tmp_path / "descore"), batch_size=2),
    )
    with pytest.raises(
        ConfigError, match="frame"
    ):  # 9 frames at 16 fps sampled at 2 fps: 2 frames needed, 1 given
        GRPOTrainer(config, pipe=make_pipeline("wan2.1"))
    config.reward = RewardSpec(kind="descore", path=str(tmp_path / "descore"), sampling={"fps": 8.0})
    trainer = GRPOTrainer(config, pipe=make_pipeline("wan2.1"))
    assert trainer.reward.name == "DeScore(think_free)" and trainer.reward.differentiable
    metrics = trainer.run_update(0)
    assert metrics["reward/std"] > 0 and metrics["train/first_step_ratio_deviation"] == 0.0


def test_draft_frame_subset_with_checkpointing(make_pipeline, tmp_path):
    config = make_config(
        "draft",
        "ltx",
        tmp_path,
        reward_frames=3,
        gradient_checkpointing=True,
        decoder_checkpointing=True,
        last_k=2,
    )
    told = []
    trainer = DRaFTTrainer(
        config,
        pipe=make_pipeline("ltx"),
        reward=CallableReward(lambda v, p, fps: told.append(fps) or redness(v, p), differentiable=True),
    )
    # 3 of 9 frames at the widest even spacing (4), so the reward is told a quarter of the clip's fps
    assert [trainer.frame_subset(u) for u in range(3)] == [[0, 4, 8]] * 3
    metrics = trainer.run_update(0)
    assert metrics["train/grad_norm"] > 0 and told == [trainer.fps / 4]
    two = DRaFTTrainer(
        make_config("draft", "ltx", tmp_path / "two", reward_frames=2, last_k=1),
        pipe=make_pipeline("ltx"),
        reward=reward(),
    )
    assert {tuple(two.frame_subset(u)) for u in range(8)} == {(0, 8)}
    four = DRaFTTrainer(
        make_config("draft", "ltx", tmp_path / "four", reward_frames=4, last_k=1),
        pipe=make_pipeline("ltx"),
        reward=reward(),
    )
    # spacing 2 spans 7 of the 9 frames: offsets 0-2, all drawn
    subsets = {tuple(four.frame_subset(u)) for u in range(16)}
    assert subsets == {(0, 2, 4, 6), (1, 3, 5, 7), (2, 4, 6, 8)}
    with pytest.raises(ConfigError, match="reward_frames"):
        make_config("draft", "ltx", tmp_path, reward_frames=10)


def test_bf16_mixed_precision_keeps_the_ratio_exact(make_pipeline, tmp_path):
    trainer = GRPOTrainer(
        make_config("grpo", "wan2.1", tmp_path, mixed_precision="bf16"),
        pipe=make_pipeline("wan2.1"),
        reward=reward(),
    )
    assert trainer.pipe.transformer.proj_out.weight.dtype == torch.bfloat16
    assert (
        trainer.pipe.transformer.scale_shift_table.dtype == torch.float32
    )  # kept in fp32, as diffusers does
    assert all(p.dtype == torch.float32 for p in trainer.params)
    metrics = trainer.train()[0]
    assert metrics["train/first_step_ratio_deviation"] == 0.0 and metrics["train/grad_norm"] > 0


def _reduce_uneven_gradients() -> None:
    """Run in each of 2 CPU processes: process 0 has a gradient for the first parameter only, process 1 for the
    second only (a Wan 2.2 expert that no sampled noise level reached); both must end with the mean of each."""
    from types import SimpleNamespace

    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # forked: drop the parent's single-process state
    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == 2
    rank = accelerator.process_index
    params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3))]
    params[rank].grad = torch.full((3,), 2.0 + rank)
    optimizer = torch.optim.SGD(params, lr=1.0)
    trainer = SimpleNamespace(
        accelerator=accelerator,
        params=params,
        config=SimpleNamespace(max_grad_norm=0.0),
        optimizer=optimizer,
        lr_scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
        ema=None,
    )
    RecipeTrainer.optimizer_step(trainer)
    # mean over processes: first (2 + 0) / 2 = 1, second (0 + 3) / 2 = 1.5; SGD with lr 1 subtracts them
    torch.testing.assert_close(params[0].detach(), torch.full((3,), -1.0))
    torch.testing.assert_close(params[1].detach(), torch.full((3,), -1.5))


def test_optimizer_step_reduces_every_parameter_on_every_process():
    from accelerate import debug_launcher

    debug_launcher(_reduce_uneven_gradients, num_processes=2)
