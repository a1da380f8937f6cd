"""Benchmark the fine-tuning recipes: rollout overhead, seconds per update, and reward / true-quality curves.

1. ``rollout``: :func:`recipes.rollout.rollout` (SDE steps with per-step log-probabilities recorded) against the plain
   pipeline's own sampling (``output_type="latent"``) at the same size, steps and guidance, for each tiny family and
   the toy generator. Goal: at most 1.1x. Median of ``--repeats`` runs after a warm-up.
2. ``update``: seconds per update of each recipe (GRPO, RWR, DPO, DRaFT-1) on the tiny Wan2.1 pipeline and on the toy
   generator (median over the updates after the first).
3. ``toy``: from the toy generator (:func:`toyworld.generator.load_toy_generator`) with the toy DeScore as the reward
   (``--descore PATH``; without it the toy analyzer's overall score is the reward), run GRPO, DPO and RWR for
   ``--updates`` updates each and measure, before and after (and every ``--eval-every`` updates), the mean reward and
   the analyzer-measured true quality (mean overall score, 1-5) of fresh samples of the training prompts with fixed
   seeds; changes are paired by sample, with 95% bootstrap intervals. ``--control also`` adds, per run, a control
   trained on the reward's values shuffled among the videos (fine-tuning moves quality even then);
   ``--train-seeds`` repeats each run; ``--set RECIPE.KEY=VALUE`` changes a recipe setting; ``--prompt-pool N``
   trains on the prompts of N whose samples' true quality varies most instead of the first ones.

Run: ``python bench/recipe_runs.py [--sections rollout update toy] [--updates 8] [--descore PATH] [--control also]
[--train-seeds 0 1] [--json FILE]``. (Issue 7 names it ``bench/recipes.py``; a script of that name would shadow the
``recipes`` package, since Python puts the script's folder first on ``sys.path``.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from descore.metrics import bootstrap_interval
from descore.training.config import parse_overrides
from recipes.config import config_from_mapping
from recipes.dpo import DPOConfig, DPOTrainer
from recipes.draft import DRaFTConfig, DRaFTTrainer
from recipes.families import SamplingSpec, pipeline_call_kwargs
from recipes.grpo import GRPOConfig, GRPOTrainer
from recipes.lora import LoraSpec
from recipes.rollout import rollout, seeded_generators
from recipes.rwr import RWRConfig, RWRTrainer
from reward_guidance.protocol import CallableReward, RewardFunction, descore_reward
from toyworld.analyzer import analyze
from toyworld.generator import (
    DEFAULT_CHECKPOINT,
    MAX_SEQUENCE_LENGTH,
    WORLD,
    build_toy_generator,
    load_toy_generator,
    toy_prompts,
)
from toyworld.tiny_models.video_pipelines import (
    PIPELINE_CALL_DEFAULTS,
    PIPELINE_FAMILIES,
    build_video_pipeline,
)

logger = logging.getLogger("bench.recipes")

#: The toy generator's world (48x48, 9 frames), sampled with 8 steps (half its default 16) to keep CPU runs short.
TOY_SPEC = SamplingSpec(
    height=WORLD.height,
    width=WORLD.width,
    num_frames=WORLD.num_frames,
    num_inference_steps=8,
    guidance_scale=4.0,
    max_sequence_length=MAX_SEQUENCE_LENGTH,
    fps=float(WORLD.fps),
)


def median_seconds(fns: list[Callable[[], Any]], repeats: int) -> list[float]:
    """Median wall time of each function, run interleaved (so that machine load drifts hit all alike)."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in times]


def analyzer_reward(noise: float = 0.0, seed: int = 0) -> RewardFunction:
    """The toy analyzer's overall score (1-5) of each video against its prompt; with ``noise`` > 0, plus Gaussian
    noise of that std (seeded): a judge of known, weaker ranking of the same samples."""
    generator = torch.Generator().manual_seed(seed)

    def overall(videos: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        scores = torch.tensor([analyze(v.float().cpu(), p).overall for v, p in zip(videos, prompts)])
        return scores + noise * torch.randn(len(scores), generator=generator) if noise else scores

    return CallableReward(overall, name=f"analyzer + N(0, {noise}^2)" if noise else "analyzer")


GENERATOR_PATH: Path | None = None  # --generator


def toy_pipeline(allow_untrained: bool):
    path = GENERATOR_PATH or DEFAULT_CHECKPOINT
    if (path / "model_index.json").is_file():
        return load_toy_generator(path)
    if not allow_untrained:
        return None
    logger.warning("toy generator checkpoint missing: using the untrained architecture")
    return build_toy_generator(0)


# ------------------------------------------------------------------------------------------------ 1. rollout overhead
def bench_rollout(repeats: int, batch: int, steps: int, allow_untrained: bool) -> list[dict[str, Any]]:
    rows = []
    cases = [
        (
            f,
            build_video_pipeline(f),
            SamplingSpec(**{**PIPELINE_CALL_DEFAULTS[f], "num_inference_steps": steps}),
        )
        for f in PIPELINE_FAMILIES
    ]
    toy = toy_pipeline(allow_untrained)
    if toy is not None:
        cases.append(("toy-generator", toy, TOY_SPEC))
    prompts = [f"a red circle moving left number {i}" for i in range(batch)]
    for name, pipe, spec in cases:
        call = pipeline_call_kwargs(pipe, spec)

        def plain(pipe=pipe, call=call):
            pipe(prompts, **call, generator=seeded_generators(range(batch)), output_type="latent")

        def recorded(pipe=pipe, spec=spec):
            with torch.no_grad():
                rollout(pipe, prompts, spec, seeded_generators(range(batch)))

        pipeline_s, rollout_s = median_seconds([plain, recorded], repeats)
        rows.append(
            {"case": name, "pipeline_s": pipeline_s, "rollout_s": rollout_s, "ratio": rollout_s / pipeline_s}
        )
        print(
            f"{name:>14}  pipeline {pipeline_s * 1e3:8.1f} ms  rollout+log-probs {rollout_s * 1e3:8.1f} ms  "
            f"ratio {rollout_s / pipeline_s:5.2f}"
        )
    return rows


# ------------------------------------------------------------------------------------------------ 2. seconds per update
RECIPES: dict[str, tuple[type, type, dict[str, Any]]] = {
    "grpo": (GRPOConfig, GRPOTrainer, {"beta": 0.004, "clip_range": 1e-3}),
    "rwr": (RWRConfig, RWRTrainer, {"beta": 0.5}),
    "dpo": (DPOConfig, DPOTrainer, {"beta": 100.0}),
    "draft": (DRaFTConfig, DRaFTTrainer, {"last_k": 1, "group_size": 1}),
}


def redness() -> RewardFunction:
    def score(videos, prompts):
        return (videos[:, :, 0] - 0.5 * (videos[:, :, 1] + videos[:, :, 2])).mean(dim=(1, 2, 3))

    return CallableReward(score, differentiable=True, name="redness")


def make_trainer(
    recipe: str, pipe, spec: SamplingSpec, reward, output_dir: str, prompts: list[str], **changes
):
    config_cls, trainer_cls, extra = RECIPES[recipe]
    values = {
        "output_dir": output_dir,
        "prompts": prompts,
        "sampling": spec,
        "lora": LoraSpec(rank=8, alpha=8),
        "prompts_per_update": 2,
        "group_size": 4,
        "sample_batch_size": 4,
        "learning_rate": 1e-3,
        "checkpoint_every": 0,
        "resume": False,
        "progress": False,
        **extra,
        **changes,
    }
    # Through the YAML path (sections as mappings), so that --set values are checked and typed as a config file's.
    mapping = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in values.items()}
    return trainer_cls(config_from_mapping(config_cls, mapping, "bench settings"), pipe=pipe, reward=reward)


def bench_updates(updates: int, allow_untrained: bool) -> list[dict[str, Any]]:
    rows = []
    cases = [
        (
            "tiny-wan2.1",
            lambda: build_video_pipeline("wan2.1"),
            SamplingSpec(**PIPELINE_CALL_DEFAULTS["wan2.1"]),
        )
    ]
    if toy_pipeline(allow_untrained) is not None:
        cases.append(("toy-generator", lambda: toy_pipeline(allow_untrained), TOY_SPEC))
    prompts = toy_prompts(8, seed=1)
    for name, factory, spec in cases:
        for recipe in RECIPES:
            with tempfile.TemporaryDirectory() as tmp:
                trainer = make_trainer(
                    recipe, factory(), spec, redness(), tmp, prompts, num_updates=updates + 1
                )
                history = trainer.train()
            seconds = statistics.median(m["time/update_s"] for m in history[1:])
            samples = 2 * (1 if recipe == "draft" else 4)
            rows.append(
                {"case": name, "recipe": recipe, "seconds_per_update": seconds, "samples_per_update": samples}
            )
            print(f"{name:>14}  {recipe:>5}  {seconds:7.2f} s/update  ({samples} samples per update)")
    return rows


# ------------------------------------------------------------------------------------------------ 3. toy-world curves
#: Learning rates of the toy-world runs, chosen from runs with the analyzer as the reward (docs/recipes.md has the
#: runs on two seeds with controls); DPO takes the smaller step because its loss is scaled by beta. GRPO's 3e-3 is
#: the rate at which it gains on its controls with the fixed first SDE step (at 3e-2 it loses quality).
TOY_LEARNING_RATES = {"grpo": 3e-3, "dpo": 3e-3, "rwr": 3e-2}


def toy_settings(recipe: str, lr: float | None = None) -> dict[str, Any]:
    """Recipe settings of the toy-world runs (also used by tests/recipes/test_toy_world.py); ``lr`` None takes the
    recipe's :data:`TOY_LEARNING_RATES` entry."""
    lr = TOY_LEARNING_RATES[recipe] if lr is None else lr
    return {"prompts_per_update": 4} | {
        # Flow-GRPO's log-probabilities are averaged over every latent element: on a model this small the gradients
        # are small (norms 4e-4 to 5e-2 over the LoRA), and a tiny AdamW epsilon keeps it from scaling steps down.
        "grpo": {
            "beta": 0.004,
            "clip_range": 1e-3,
            "learning_rate": lr,
            "optimizer_steps_per_update": 2,
            "adam_eps": 1e-12,
        },
        "dpo": {"beta": 100.0, "learning_rate": lr, "train_timesteps": 2},
        "rwr": {"beta": 0.25, "learning_rate": lr, "train_timesteps": 2},
    }[recipe]


def _metric(name: str, value: float) -> str:
    """One printed metric: the update as an integer, the gradient norm in scientific notation (Flow-GRPO's toy
    gradient norms go down to 1e-4, which three decimals print as 0.000), the rest with three decimals."""
    if name == "update":
        return f"update {value}"
    return f"{name} {value:.2e}" if name == "grad_norm" else f"{name} {value:.3f}"


def true_quality(
    pipe, reward: RewardFunction | None, prompts: list[str], seeds: list[int], spec: SamplingSpec
) -> dict:
    """Fresh samples of the (held-out) prompts with fixed seeds: mean reward (``reward`` None: none) and analyzer
    overall score."""
    call = pipeline_call_kwargs(pipe, spec)
    videos = []
    for start in range(0, len(prompts), 8):
        with torch.no_grad():
            videos.append(
                pipe(
                    prompts[start : start + 8],
                    **call,
                    generator=seeded_generators(seeds[start : start + 8]),
                    output_type="pt",
                )
                .frames.float()
                .clamp(0, 1)
            )
    videos = torch.cat(videos)
    quality = [analyze(v, p).overall for v, p in zip(videos, prompts)]
    result = {"true_quality": sum(quality) / len(quality), "qualities": quality}
    if reward is not None:
        rewards = reward(videos, prompts, fps=spec.fps).float().cpu().tolist()
        result.update(reward=sum(rewards) / len(rewards), rewards=rewards)
    return result


#: First sampling seed of the samples that pick training prompts by their spread (``--prompt-pool``): apart from the
#: evaluation's seeds (``--eval-seed-base``, default 10**6) and from the trainers' own noise.
SELECTION_SEED_BASE = 5 * 10**6


def varied_prompts(pipe, n: int, pool: int, samples: int) -> list[str]:
    """The ``n`` prompts of ``toy_prompts(pool, seed=11)`` whose samples' true quality varies most within the prompt
    (std of the analyzer's score over ``samples`` samples drawn with seeds of their own). A group whose samples are
    all alike gives GRPO no advantage and RWR no weighting; this picks prompts a recipe can learn from."""
    candidates = toy_prompts(pool, seed=11)
    prompts = [p for p in candidates for _ in range(samples)]
    seeds = list(range(SELECTION_SEED_BASE, SELECTION_SEED_BASE + len(prompts)))
    quality = torch.tensor(true_quality(pipe, None, prompts, seeds, TOY_SPEC)["qualities"])
    spread = quality.view(pool, samples).std(dim=1)
    order = spread.argsort(descending=True, stable=True)[:n].tolist()
    for i in order:
        print(f"  picked (spread {spread[i]:.2f}): {candidates[i]}")
    return [candidates[i] for i in order]


def paired_change(before: dict, after: dict, key: str) -> tuple[float, float, float]:
    """Mean change of one per-sample value (``rewards`` or ``qualities``) between two evaluations of the same prompts
    and seeds, with a 95% bootstrap interval over the samples: the evaluation's noise, not the training run's."""
    return bootstrap_interval([a - b for a, b in zip(after[key], before[key])])


def permuted(reward: RewardFunction, seed: int) -> RewardFunction:
    """The control reward: ``reward``'s values shuffled among the videos of each call (seeded). Same scale and spread,
    no link to the videos, so a run trained on it shows how far true quality drifts when a recipe learns nothing."""
    generator = torch.Generator().manual_seed(seed)

    def shuffled(videos: torch.Tensor, prompts: list[str], fps: float | None = None) -> torch.Tensor:
        values = reward(videos, prompts, fps=fps)
        return values[torch.randperm(len(values), generator=generator)]

    return CallableReward(shuffled, frames=reward.frames, name=f"permuted {reward.name}")


def bench_toy(
    updates: int,
    eval_every: int,
    descore: str | None,
    descore_mode: str,
    train_prompts: int,
    eval_seeds: int,
    allow_untrained: bool,
    recipes: list[str],
    lr: float | None,
    overrides: dict[str, dict[str, Any]] | None = None,
    train_seeds: tuple[int, ...] = (0,),
    control: str = "off",
    eval_seed_base: int = 10**6,
    analyzer_noise: float = 0.0,
    prompt_pool: int = 0,
    selection_samples: int = 8,
) -> list[dict[str, Any]]:
    overrides = overrides or {}
    if toy_pipeline(allow_untrained) is None:
        print(
            "toy world: the toy generator checkpoint is missing (train it with `descore toy train-generator`, "
            "or pass --allow-untrained)"
        )
        return []
    if descore:
        from descore.scoring import DeScore

        reward = descore_reward(DeScore.from_pretrained(descore), descore_mode, batch_size=16)
    else:
        reward = analyzer_reward(analyzer_noise)
    # Train on a small prompt set; evaluate on fresh samples (seeds never used in training) of the same prompts.
    if prompt_pool:
        train = varied_prompts(toy_pipeline(allow_untrained), train_prompts, prompt_pool, selection_samples)
    else:
        train = toy_prompts(train_prompts, seed=11)
    held_out = [p for p in train for _ in range(eval_seeds)]
    seeds = list(range(eval_seed_base, eval_seed_base + len(held_out)))
    before = {"update": 0, **true_quality(toy_pipeline(allow_untrained), reward, held_out, seeds, TOY_SPEC)}
    print(f"  before: reward {before['reward']:.3f}, true_quality {before['true_quality']:.3f}")
    rows = []
    for recipe in recipes:
        for seed in train_seeds:
            for is_control in {"off": (False,), "also": (False, True), "only": (True,)}[control]:
                name = _run_name(recipe, seed, is_control)
                curve = [before]

                def evaluate(trainer, metrics, name=name, curve=curve):
                    # A DPO update whose groups all tie takes no step and reports no gradient norm.
                    point = {
                        "update": metrics["update"],
                        "train_reward": metrics["reward/mean"],
                        "grad_norm": metrics.get("train/grad_norm", float("nan")),
                    }
                    if metrics["update"] % eval_every == 0 or metrics["update"] == updates:
                        point.update(true_quality(trainer.pipe, reward, held_out, seeds, TOY_SPEC))
                    curve.append(point)
                    shown = {k: v for k, v in point.items() if not isinstance(v, list)}
                    print(f"  {name} " + ", ".join(_metric(k, v) for k, v in shown.items()))

                settings = {**toy_settings(recipe, lr), **overrides.get(recipe, {})}
                with tempfile.TemporaryDirectory() as tmp:
                    trainer = make_trainer(
                        recipe,
                        toy_pipeline(allow_untrained),
                        TOY_SPEC,
                        permuted(reward, seed) if is_control else reward,
                        tmp,
                        train,
                        num_updates=updates,
                        seed=seed,
                        **settings,
                    )
                    trainer.train(callback=evaluate)
                after = curve[-1]
                rows.append(
                    {
                        "recipe": recipe,
                        "seed": seed,
                        "control": is_control,
                        "settings": settings,
                        "prompts": train,
                        "before": before,
                        "after": after,
                        "curve": curve,
                        "reward_change": paired_change(before, after, "rewards"),
                        "quality_change": paired_change(before, after, "qualities"),
                    }
                )
    print(
        f"\ntoy world ({f'DeScore {descore_mode} {descore}' if descore else 'analyzer reward'}), {updates} updates, "
        f"{train_prompts} prompts, true quality on {len(held_out)} fresh samples; changes paired by sample, with 95% "
        "bootstrap intervals over the samples (the evaluation's noise; the runs' spread is in the rows)"
    )
    print(
        f"{'run':>22} | {'reward before':>13} {'after':>7} {'change [95%]':>25} | "
        f"{'true quality before':>19} {'after':>7} {'change [95%]':>25}"
    )
    for row in rows:
        b, a = row["before"], row["after"]
        name = _run_name(row["recipe"], row["seed"], row["control"])
        print(
            f"{name:>22} | {b['reward']:13.3f} {a['reward']:7.3f} {_change(row['reward_change']):>25} | "
            f"{b['true_quality']:19.3f} {a['true_quality']:7.3f} {_change(row['quality_change']):>25}"
        )
    return rows


def _run_name(recipe: str, seed: int, control: bool) -> str:
    return f"{recipe} seed {seed}" + (" control" if control else "")


def _change(interval: tuple[float, float, float]) -> str:
    mean, low, high = interval
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"


def recipe_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["dpo.sft_weight=25", ...]`` -> ``{"dpo": {"sft_weight": 25}}`` (values read as YAML, typed by the config)."""
    overrides: dict[str, dict[str, Any]] = {}
    for key, value in parse_overrides(items).items():
        recipe, _, name = key.partition(".")
        if recipe not in RECIPES or not name:
            raise SystemExit(f"--set {key}: expected RECIPE.KEY=VALUE with RECIPE one of {sorted(RECIPES)}")
        overrides.setdefault(recipe, {})[name] = value
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sections", nargs="+", default=["rollout", "update", "toy"], choices=["rollout", "update", "toy"]
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=4, help="videos per rollout timing")
    parser.add_argument(
        "--steps", type=int, default=8, help="sampling steps of the tiny pipelines in the timing"
    )
    parser.add_argument("--updates", type=int, default=8)
    parser.add_argument("--eval-every", type=int, default=4)
    parser.add_argument("--train-prompts", type=int, default=8, help="toy-world training prompts")
    parser.add_argument(
        "--prompt-pool",
        type=int,
        default=0,
        help="pick the training prompts from this many by the spread of their samples' true quality (0: the "
        "first --train-prompts)",
    )
    parser.add_argument(
        "--selection-samples", type=int, default=8, help="samples per pool prompt that measure its spread"
    )
    parser.add_argument(
        "--eval-seeds", type=int, default=3, help="fresh samples per prompt in the evaluations"
    )
    parser.add_argument(
        "--recipes", nargs="+", default=["grpo", "dpo", "rwr"], choices=["grpo", "dpo", "rwr"]
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help="learning rate of the toy-world runs (default: per recipe, TOY_LEARNING_RATES)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="RECIPE.KEY=VALUE",
        help="override one toy-world recipe setting, e.g. dpo.sft_weight=25 (value read as YAML; repeatable)",
    )
    parser.add_argument(
        "--train-seeds",
        type=int,
        nargs="+",
        default=[0],
        help="one toy-world run per recipe and training seed",
    )
    parser.add_argument(
        "--control",
        choices=["off", "also", "only"],
        default="off",
        help="also (or only) run each recipe on the reward's values shuffled among the videos: the drift of "
        "learning nothing",
    )
    parser.add_argument(
        "--eval-seed-base", type=int, default=10**6, help="first sampling seed of the toy-world evaluations"
    )
    parser.add_argument("--descore", help="toy DeScore checkpoint used as the reward (default: the analyzer)")
    parser.add_argument(
        "--descore-mode",
        default="think",
        choices=["think", "think_free"],
        help="how the DeScore reward scores (default think)",
    )
    parser.add_argument(
        "--analyzer-noise",
        type=float,
        default=0.0,
        help="without --descore: add Gaussian noise of this std to the analyzer's score (a weaker judge)",
    )
    parser.add_argument("--generator", type=Path, help="toy generator checkpoint (default: the shipped one)")
    parser.add_argument(
        "--allow-untrained", action="store_true", help="use the untrained toy generator if missing"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write every number to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    global GENERATOR_PATH
    GENERATOR_PATH = args.generator
    logging.basicConfig(level=logging.WARNING)
    results: dict[str, Any] = {}
    if "rollout" in args.sections:
        print("== rollout with log-probs vs the pipeline's sampling (median)")
        results["rollout"] = bench_rollout(args.repeats, args.batch, args.steps, args.allow_untrained)
    if "update" in args.sections:
        print("== seconds per update")
        results["update"] = bench_updates(3, args.allow_untrained)
    if "toy" in args.sections:
        print("== toy world")
        results["toy"] = bench_toy(
            args.updates,
            args.eval_every,
            args.descore,
            args.descore_mode,
            args.train_prompts,
            args.eval_seeds,
            args.allow_untrained,
            args.recipes,
            args.lr,
            recipe_overrides(args.set),
            tuple(args.train_seeds),
            args.control,
            args.eval_seed_base,
            args.analyzer_noise,
            args.prompt_pool,
            args.selection_samples,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
