"""The toy DeScore checkpoint: toy dataset -> vision pretraining -> CoT SFT -> stage 1 -> stage 2 -> export, plus a
discriminative baseline.

``descore toy train-descore --out DIR`` (or :func:`train_toy_descore`) reproduces the checkpoint shipped in
``toyworld/checkpoints/toy_descore`` on a CPU (two threads by default; ``--resume`` continues an interrupted run):

1. **data**: a toy preference dataset (``toyworld.dataset.build_dataset``) in the toy generator's 48x48 world, plus
   on-policy pairs of the shipped toy generator's samples labelled by the analyzer
   (``toyworld.dataset.build_generated_dataset``), so the checkpoint is trained on what it judges in best-of-N and the
   recipes. Every on-policy training sample also joins mirrored, reversed and both (:mod:`toyworld.mirror`), each
   under the prompt asking for what it shows: four times the on-policy data for the cost of labelling it
   (``--no-mirrors`` leaves them out; with them the best-of-8 pick gains clear of chance, docs/training.md). Every
   CoT is a
   *track* CoT (:func:`toyworld.annotator.annotate_track`): where each asked object is in every temporal slice,
   then what is seen next to what was asked, then the analyzer's answer. Reading motion means comparing positions
   across slices; writing them down first is what lets a 3-layer language model do it;
2. **backbone**: the tiny ``toy`` Qwen3-VL (real architecture, random init, :func:`toyworld.tiny_models.save_qwen_vl`)
   with its vision tower pretrained on rendered clips and the on-policy samples (:mod:`toyworld.vision_pretraining`);
3. **CoT SFT** (:mod:`descore.training.sft`): the random language model learns to write the CoTs, every weight
   trained. Half of every batch is the on-policy samples, half freshly rendered clips with 0-3 defects
   (:class:`toyworld.dataset.RenderedCoTStream`): thousands of steps, never the same rendered clip twice;
4. **stage 1** (:mod:`descore.training.cold_start`): LoRA + query token + head, Bradley-Terry with the CoT dropped for
   half of the pairs, plus a language-model loss on the kept CoTs so the model keeps writing them. The head learns to
   read the written verdict;
5. **stage 2** (:mod:`descore.training.dual_rl`): GRPO on sampled CoTs with the rollout reward, auxiliary BT. Run and
   reported, but the exported checkpoint is stage 1's (``export_stage``): on the toy run stage 2 lowers the pick;
6. **baseline**: stage 1 with ``cot_mask_prob: 1.0`` (think-free, discriminative) from the same SFT backbone, on the
   same pairs and for the same number of steps;
7. **evaluation** (:mod:`descore.evaluation`) on the in-domain and out-of-domain test splits and the generator's
   held-out prompts: think, think-free and given-CoT accuracy, with and without ties, and the generated CoTs' answer
   format and sub-score agreement.

Every phase is seeded; the configs used are written as YAML next to the runs, ``timings.json`` holds each finished
phase's time and ``report.json`` the timings and accuracies. The judge template is the compact one
(:data:`COMPACT_TEMPLATE`): the full alignment judge is about 360 tokens, longer than everything else in a toy
sequence together.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from descore.answer import parse_answer
from descore.errors import ConfigError
from descore.evaluation import evaluate_pairs
from descore.pairs import load_pairs
from descore.scoring import DeScore
from descore.templates import TEMPLATES
from descore.training.cold_start import ColdStartConfig, ColdStartTrainer
from descore.training.dual_rl import DualRLConfig, DualRLTrainer
from descore.training.rewards import quality_reward
from descore.training.sft import SFTConfig, SFTTrainer
from toyworld.dataset import (
    COT_STYLES,
    RenderedCoTStream,
    build_dataset,
    build_generated_dataset,
    concatenate_pair_files,
)
from toyworld.generator import TOY_GENERATOR_CALL, WORLD, load_toy_generator, toy_prompts
from toyworld.mirror import MIRRORS, check_views
from toyworld.prompts import parse_prompt
from toyworld.tiny_models import save_qwen_vl
from toyworld.vision_pretraining import VisionPretrainingConfig, measured_clips, pretrain_vision_tower

logger = logging.getLogger(__name__)

#: The judge template of the toy checkpoint: the rubric in one sentence (63 tokens with the toy tokenizer).
COMPACT_TEMPLATE = TEMPLATES["compact_alignment_judge"]
#: Where the shipped checkpoint lives.
SHIPPED_CHECKPOINT = Path(__file__).parent / "checkpoints" / "toy_descore"
#: The label the toy DeScore is trained and evaluated on (= the utility; VideoAlign's TA).
DIMENSION = "Overall"
#: Video sampling of the toy checkpoint: all 9 frames of a toy clip at 8 fps, resized to 64 x 64 (20 video tokens).
TOY_SAMPLING = {"fps": 8.0, "min_frames": 2, "max_frames": 9, "min_pixels": 64 * 64, "max_pixels": 64 * 64}
#: Greedy CoTs without repetition penalty (a CoT repeats words and digits by design); track CoTs are <= 200 tokens.
TOY_GENERATION = {"max_new_tokens": 256, "repetition_penalty": 1.0}


@dataclass
class ToyDeScoreRecipe:
    """Every setting of the toy recipe. Phase dictionaries override fields of the phase's config class."""

    seed: int = 0
    num_threads: int = 2
    """CPU threads of every phase (the shipped checkpoint: 2)."""
    cot_style: str = "track"
    """CoTs of every video (``toyworld.dataset.COT_STYLES``): ``track`` writes where each asked object is in every
    temporal slice before judging, from the analyzer's measurement (what lets the tiny judge read motion)."""
    pairs: int = 3000
    """Rendered pairs over all splits (three videos per prompt, so about one video per pair)."""
    videos_per_prompt: int = 3
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    generated_prompts: int = 800
    """Prompts whose toy-generator samples, labelled by the analyzer, join the data (on-policy pairs: what the
    checkpoint will judge in best-of-N and the recipes); 0 trains on rendered videos only."""
    generated_videos_per_prompt: int = 4
    generated_mirrors: tuple[str, ...] = MIRRORS
    """Mirrored views (:data:`toyworld.mirror.MIRRORS`) of every on-policy training sample that join it, each under
    the prompt asking for what it shows and labelled by the analyzer: four times the on-policy data for the cost of
    labelling it (sampling is the slow part). All three by default: the shipped checkpoint's best-of-8 pick gains
    clear of chance on 1,000 pre-registered prompts, the model without them does not (docs/training.md)."""
    generator: str | None = None
    """Toy generator checkpoint for the on-policy pairs (default: the shipped one)."""
    generated_lossless: bool = True
    """Store the on-policy samples losslessly, so their analyzer labels match the frames best-of-N scores up to 8-bit
    rounding."""
    backbone_size: str = "toy"
    vision_pretraining: dict[str, Any] | None = field(
        default_factory=lambda: {"steps": 1500, "generated_fraction": 0.5}
    )
    """Settings (:class:`~toyworld.vision_pretraining.VisionPretrainingConfig` fields) of a phase that pretrains the
    backbone's vision tower on rendered clips, and on the on-policy samples' analyzer measurements, before the CoT
    SFT; None skips it."""
    sft_on_policy_only: bool = True
    """The CoT SFT's pair file is the on-policy samples only; with ``streamed_per_batch`` in ``sft``, freshly
    rendered clips (:class:`toyworld.dataset.RenderedCoTStream`) fill the rest of every batch."""
    sft: dict[str, Any] = field(
        default_factory=lambda: {
            "lora_r": None,
            "learning_rate": 1e-3,
            "vision_learning_rate": 3e-4,
            "weight_decay": 0.01,
            "lr_scheduler": "cosine",
            "warmup_ratio": 0.01,
            "batch_size": 16,
            "streamed_per_batch": 8,
            "max_steps": 5500,
            "save_every": 250,
            "save_total_limit": 1,
        }
    )
    stage1: dict[str, Any] = field(
        default_factory=lambda: {
            "lora_r": 32,
            "lora_alpha": 64.0,
            "lora_dropout": 0.0,
            "learning_rate": 2e-4,
            "batch_size": 16,
            "gradient_accumulation_steps": 1,
            "max_steps": 200,
            "cot_mask_prob": 0.5,
            "lm_loss_weight": 1.0,
        }
    )
    stage2: dict[str, Any] = field(
        default_factory=lambda: {
            "lora_r": 16,
            "lora_alpha": 32.0,
            "group_size": 4,
            "pairs_per_step": 8,
            "rollout_batch_size": 16,
            "micro_batch_pairs": 2,
            "mini_batches": 2,
            "max_new_tokens": 256,
            "temperature": 1.0,
            "length_thresholds": [50.0, 100.0, 150.0, 200.0],
            "learning_rate": 5e-4,
            "max_steps": 40,
        }
    )
    baseline_steps: int | None = None
    """Steps of the discriminative baseline (default: stage 1's)."""
    export_stage: str = "stage1"
    """Which model ``export_to`` receives: ``stage1`` or ``stage2``. Stage 1 is shipped: on this toy run stage 2
    (GRPO on the model's own CoTs) does not raise its rollout reward and lowers the best-of-N pick (docs/training.md);
    it is still run and reported."""
    eval_modes: tuple[str, ...] = ("think", "no_think", "given_cot")

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a setting the recipe cannot run (before any data is made)."""
        check_views(self.generated_mirrors, "generated_mirrors")
        if self.export_stage not in ("stage1", "stage2"):
            raise ConfigError(f"export_stage must be stage1 or stage2, got {self.export_stage!r}")
        if self.cot_style not in COT_STYLES:
            raise ConfigError(f"cot_style must be one of {', '.join(COT_STYLES)}, got {self.cot_style!r}")
        if (
            isinstance(self.generated_prompts, bool)
            or not isinstance(self.generated_prompts, int)
            or (self.generated_prompts < 0)
        ):
            raise ConfigError(
                f"generated_prompts (--generated-prompts) must be an integer >= 0, got {self.generated_prompts!r}"
            )

    @classmethod
    def quick(cls) -> ToyDeScoreRecipe:
        """A few steps of everything on a small dataset: checks the recipe runs (seconds, not a useful model)."""
        recipe = cls(
            pairs=24,
            split_fractions=(0.5, 0.25, 0.25),
            generated_prompts=3,
            generated_videos_per_prompt=2,
            vision_pretraining={"steps": 2, "batch_size": 4, "eval_clips": 4, "generated_fraction": 0.5},
        )
        recipe.sft.update(max_steps=2, batch_size=4, streamed_per_batch=2)
        recipe.stage1["max_steps"] = 2
        recipe.stage2.update(max_steps=1, max_new_tokens=16, group_size=2, pairs_per_step=2, mini_batches=1)
        return recipe


class _Phases:
    """Wall and CPU seconds per phase, kept in ``timings.json`` so that a resumed run reports every phase once."""

    def __init__(self, path: Path):
        self.path = path
        self.times: dict[str, dict[str, float]] = json.loads(path.read_text()) if path.exists() else {}

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.times[name] = {
            "seconds": round(time.perf_counter() - wall, 1),
            "cpu_seconds": round(time.process_time() - cpu, 1),
        }
        self.path.write_text(json.dumps(self.times, indent=2) + "\n")
        logger.info("%s: %.0f s", name, self.times[name]["seconds"])


def _write_config(config: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def evaluate_toy(
    scorer: DeScore, pair_file: Path, modes: Sequence[str], batch_size: int = 16
) -> dict[str, Any]:
    """Accuracy with and without ties per mode on one pair file; in think mode also the generated CoTs' answer
    format rate and their sub-score agreement with the ground truth."""
    pairs = load_pairs(pair_file, dimension=DIMENSION)
    results: dict[str, Any] = {}
    for mode in modes:
        evaluation = evaluate_pairs(
            scorer, pairs, mode=mode, dimensions=[DIMENSION], batch_size=batch_size, progress=False
        )
        report = evaluation.dimensions[DIMENSION]
        entry = {
            "accuracy": report.without_ties.accuracy,
            "accuracy_with_ties": report.with_ties.accuracy,
            "tie_threshold": report.with_ties.epsilon,
            "pairs": evaluation.num_pairs,
            "seconds": evaluation.seconds,
        }
        if mode == "think":
            answers, quality = [], []
            for pair, cot_a, cot_b in zip(pairs, evaluation.cots_a, evaluation.cots_b):
                for cot, truth in ((cot_a, pair.gt_subscores_a), (cot_b, pair.gt_subscores_b)):
                    answer = parse_answer(cot or "")
                    answers.append(answer is not None)
                    quality.append(quality_reward(answer.dimensional_scores if answer else None, truth))
            entry["cot_format"] = float(np.mean(answers))
            entry["cot_subscore_agreement"] = float(np.mean(quality))
        results[mode] = entry
    return results


def _in_domain_prompts(count: int, seed: int, held_out: set[tuple[str, str]]) -> list[str]:
    """``count`` toy prompts none of which asks for a held-out (colour, shape) combination (those stay OOD)."""
    prompts: list[str] = []
    batch = 0
    while len(prompts) < count:
        for prompt in toy_prompts(2 * count, seed=seed + 1000 * batch):
            if not {(o.color, o.shape) for o in parse_prompt(prompt).objects} & held_out:
                prompts.append(prompt)
        batch += 1
    return prompts[:count]


def train_toy_descore(
    out_dir: str | Path,
    recipe: ToyDeScoreRecipe | None = None,
    *,
    export_to: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the whole recipe into ``out_dir`` and return the report (also written to ``out_dir/report.json``).
    ``export_to`` receives a copy of the final DeScore checkpoint with ``report.json``. With ``resume``, a run
    interrupted in ``out_dir`` continues: finished phases are kept, the on-policy sampling and the CoT SFT continue
    from what they had written, and a trainer phase restarts from its last checkpoint."""
    import torch

    recipe = recipe or ToyDeScoreRecipe()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not resume:
        raise ConfigError(f"{out}: folder is not empty; the recipe writes a fresh run (or pass resume=True)")
    recipe.validate()
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(recipe.num_threads)
    phases = _Phases(out / "timings.json")
    data = _dataset_phase(out / "data", recipe, phases, progress)
    base = save_qwen_vl(out / "base", "qwen3_vl", recipe.backbone_size, seed=recipe.seed)
    if recipe.vision_pretraining is not None:
        base = _vision_phase(out, base, recipe, phases, progress)
    common = {
        "mixed_precision": "no",
        "seed": recipe.seed,
        "progress": progress,
        "video_cache_dir": str(out / "frames"),
        "save_every": 0,
        "resume": True,
    }
    train_file = data["train_file"]

    def run(name: str, config: Any, trainer: Callable[[Any], Any]) -> Path:
        final = Path(config.output_dir) / "final"
        if final.is_dir():
            return final
        _write_config(config, out / "configs" / f"{name}.yaml")
        with phases.timed(name):
            return trainer(config).train().final_dir

    sft_file = (
        data["generated_train_file"] if recipe.sft_on_policy_only and recipe.generated_prompts else train_file
    )
    sft = SFTConfig(
        **{
            "model": str(base),
            "model_config": {
                "sampling": TOY_SAMPLING,
                "template": COMPACT_TEMPLATE.name,
                "generation": TOY_GENERATION,
            },
            "train_file": sft_file,
            "output_dir": str(out / "sft"),
            **common,
            **recipe.sft,
        }
    )
    stream = RenderedCoTStream(WORLD, data["held_out"]) if sft.streamed_per_batch else None
    sft_dir = run("sft", sft, lambda config: SFTTrainer(config, stream=stream))

    stage1_fields = {"model": str(sft_dir), "train_file": train_file, "dimension": DIMENSION, **common}
    stage1 = ColdStartConfig(**{**stage1_fields, "output_dir": str(out / "stage1"), **recipe.stage1})
    stage1_dir = run("stage1", stage1, ColdStartTrainer)
    stage2 = DualRLConfig(
        **{
            "model": str(stage1_dir),
            "train_file": train_file,
            "dimension": DIMENSION,
            "output_dir": str(out / "stage2"),
            **common,
            **recipe.stage2,
        }
    )
    final_dir = run("stage2", stage2, DualRLTrainer)
    baseline_cfg = {**recipe.stage1, "cot_mask_prob": 1.0, "lm_loss_weight": 0.0}
    if recipe.baseline_steps is not None:
        baseline_cfg["max_steps"] = recipe.baseline_steps
    baseline = ColdStartConfig(**{**stage1_fields, "output_dir": str(out / "baseline"), **baseline_cfg})
    baseline_dir = run("baseline", baseline, ColdStartTrainer)

    models = {
        "descore": (final_dir, recipe.eval_modes),
        "descore_stage1": (stage1_dir, recipe.eval_modes),
        "discriminative_baseline": (baseline_dir, ("no_think",)),
    }
    results: dict[str, Any] = {}
    with phases.timed("evaluation"):
        for name, (path, modes) in models.items():
            scorer = DeScore.from_pretrained(path)
            results[name] = {
                split: evaluate_toy(scorer, file, modes) for split, file in data["test_files"].items()
            }
    report = {
        "recipe": asdict(recipe),
        "seconds": {name: t["seconds"] for name, t in phases.times.items()},
        "cpu_seconds": {name: t["cpu_seconds"] for name, t in phases.times.items()},
        "total_seconds": round(sum(t["seconds"] for t in phases.times.values()), 1),
        "pairs": data["pairs"],
        "results": results,
        "stage2_history": _stage2_curve(out / "stage2"),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if export_to is not None:
        export_checkpoint({"stage1": stage1_dir, "stage2": final_dir}[recipe.export_stage], export_to, report)
    return report


def _dataset_phase(data: Path, recipe: ToyDeScoreRecipe, phases: _Phases, progress: bool) -> dict[str, Any]:
    """The rendered pairs plus the on-policy pairs; ``data/dataset.json`` records the files once both are written
    (a resumed run reads it, or rebuilds the rendered pairs and continues the on-policy sampling)."""
    marker = data / "dataset.json"
    if marker.exists():
        return json.loads(marker.read_text())
    with phases.timed("dataset"):
        summary = build_dataset(
            data,
            recipe.pairs,
            recipe.seed,
            config=WORLD,
            cot_style=recipe.cot_style,
            videos_per_prompt=recipe.videos_per_prompt,
            split_fractions=recipe.split_fractions,
            overwrite=True,
            progress=progress,
        )
        train_file = summary.pair_files["train"]
        test_files = {s: str(summary.pair_files[s]) for s in ("test_id", "test_ood")}
        generated_train = None
        if recipe.generated_prompts:
            for stale in data.glob(
                "generated_*.csv"
            ):  # written by an interrupted run; remade from its samples
                stale.unlink()
            generated = build_generated_dataset(
                data,
                load_toy_generator(recipe.generator),
                _in_domain_prompts(recipe.generated_prompts, recipe.seed + 1, set(summary.held_out)),
                recipe.seed,
                call=TOY_GENERATOR_CALL,
                fps=float(WORLD.fps),
                videos_per_prompt=recipe.generated_videos_per_prompt,
                lossless=recipe.generated_lossless,
                mirrors=recipe.generated_mirrors,
                cot_style="brief" if recipe.cot_style == "full" else recipe.cot_style,
                progress=progress,
            )
            generated_train = str(generated.pair_files["train"])
            train_file = concatenate_pair_files(
                [train_file, generated.pair_files["train"]], data / "train_with_generated.csv"
            )
            test_files["generated_test"] = str(generated.pair_files["test"])
    info = {
        "train_file": str(train_file),
        "generated_train_file": generated_train,
        "test_files": test_files,
        "held_out": [list(c) for c in summary.held_out],
        "pairs": summary.pairs,
    }
    marker.write_text(json.dumps(info, indent=2) + "\n")
    return info


def _vision_phase(out: Path, base: Path, recipe: ToyDeScoreRecipe, phases: _Phases, progress: bool) -> Path:
    """The backbone with its vision tower pretrained on rendered clips and the on-policy training samples."""
    target = out / "vision"
    if (target / "vision_pretraining.json").exists():
        return target
    if target.exists():  # an interrupted pretraining: it has no checkpoints, start it again
        shutil.rmtree(target)
    with phases.timed("vision"):
        listing = out / "data" / "generated_videos.jsonl"
        records = [json.loads(line) for line in listing.read_text().splitlines()] if listing.exists() else []
        on_policy = [out / "data" / r["path"] for r in records if r["split"] == "train"]
        return pretrain_vision_tower(
            base,
            target,
            TOY_SAMPLING,
            WORLD,
            VisionPretrainingConfig(**{"seed": recipe.seed, **recipe.vision_pretraining}),
            generated=measured_clips(on_policy, progress=progress) if on_policy else None,
            progress=progress,
        )


def _stage2_curve(run: Path) -> list[dict[str, float]]:
    from descore.training import read_metrics

    keys = (
        "step",
        "reward",
        "reward_quality",
        "reward_format",
        "reward_length",
        "kl",
        "clip_fraction",
        "bt_accuracy",
        "cot_tokens",
    )
    return [{k: m[k] for k in keys if k in m} for m in read_metrics(run) if "reward" in m]


def export_checkpoint(final_dir: str | Path, target: str | Path, report: dict[str, Any]) -> Path:
    """Copy a trained DeScore checkpoint and its report to ``target`` (replacing what was there)."""
    target = Path(target)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(final_dir, target)
    (target / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return target


def format_report(report: dict[str, Any]) -> str:
    """A markdown table of the accuracies (without ties / with ties) per model, split and mode, and the timings."""
    modes = ("think", "no_think", "given_cot")
    lines = [
        "| model | split | " + " | ".join(modes) + " |",
        "|---|---|" + "---|" * len(modes),
    ]
    for model, splits in report["results"].items():
        for split, results in splits.items():
            cells = [
                f"{results[m]['accuracy']:.3f} / {results[m]['accuracy_with_ties']:.3f}"
                if m in results
                else "-"
                for m in modes
            ]
            lines.append(f"| {model} | {split} | " + " | ".join(cells) + " |")
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in report["seconds"].items())
    lines.append("")
    lines.append(f"Wall time {report['total_seconds']:.0f} s ({phases}).")
    return "\n".join(lines)


def recipe_from_args(args: argparse.Namespace) -> ToyDeScoreRecipe:
    """The recipe ``descore toy train-descore`` runs for its parsed arguments."""
    recipe = ToyDeScoreRecipe.quick() if args.quick else ToyDeScoreRecipe()
    recipe.seed = args.seed
    recipe.generator = args.generator
    recipe.generated_lossless = not args.lossy_generated
    if args.generated_prompts is not None:
        recipe.generated_prompts = args.generated_prompts
    if args.no_mirrors:
        recipe.generated_mirrors = ()
    recipe.validate()
    return recipe


def _run(args: argparse.Namespace) -> int:
    recipe = recipe_from_args(args)
    report = train_toy_descore(
        args.out, recipe, export_to=args.export, resume=args.resume, progress=not args.quiet
    )
    print(format_report(report))
    print(f"report written to {Path(args.out) / 'report.json'}")
    return 0


def add_descore_commands(toy_subparsers: argparse._SubParsersAction) -> None:
    """Add ``descore toy train-descore`` to the ``descore toy`` sub-commands."""
    p = toy_subparsers.add_parser(
        "train-descore",
        help="train the toy DeScore checkpoint (SFT, stage 1, stage 2) and its discriminative baseline",
        description="Build a toy dataset, teach the tiny toy backbone the judge's CoT, run stage 1 and stage 2, "
        "train the discriminative baseline on the same pairs and evaluate both in-domain and out-of-domain. "
        "About 80 minutes on two CPU threads after the on-policy sampling (3,200 generator clips, 0.7 s each per "
        f"thread); --resume continues an interrupted run. The shipped checkpoint ({SHIPPED_CHECKPOINT}) is "
        "`--export toyworld/checkpoints/toy_descore` of the default run (its stage-1 model).",
    )
    p.add_argument("--out", required=True, help="new or empty folder for data, runs, configs and report.json")
    p.add_argument("--seed", type=int, default=0, help="seed of the dataset and of every training phase")
    p.add_argument(
        "--generator",
        default=None,
        help="toy generator checkpoint for the on-policy samples (default: the shipped one)",
    )
    p.add_argument(
        "--generated-prompts",
        type=int,
        default=None,
        help="generator prompts (4 samples each) for the on-policy pairs (default 800; 0: rendered videos only)",
    )
    p.add_argument(
        "--no-mirrors",
        action="store_true",
        help="leave out the mirrored, reversed and mirrored-reversed views of the on-policy training samples "
        "(the default adds them: four times the on-policy data)",
    )
    p.add_argument(
        "--lossy-generated",
        action="store_true",
        help="store the on-policy samples as H.264 copies (their labels then differ from the frames best-of-N scores)",
    )
    p.add_argument("--export", default=None, help="copy the final checkpoint (with report.json) here")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in --out (finished phases are kept, the others continue or restart)",
    )
    p.add_argument("--quick", action="store_true", help="a few steps of everything (checks the recipe runs)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


__all__ = [
    "COMPACT_TEMPLATE",
    "DIMENSION",
    "SHIPPED_CHECKPOINT",
    "TOY_GENERATION",
    "TOY_SAMPLING",
    "ToyDeScoreRecipe",
    "add_descore_commands",
    "evaluate_toy",
    "export_checkpoint",
    "format_report",
    "recipe_from_args",
    "train_toy_descore",
]
