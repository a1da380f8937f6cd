"""`descore train {sft,cold-start,dual-rl}` and `descore eval`: training stages from YAML configs, and pair-accuracy
evaluation."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

TRAIN_EPILOG = """\
The config is a YAML file whose keys are these fields (unknown keys are errors):

{fields}

Example:
  model: Qwen3-VL-8B-Instruct/        # base Qwen-VL or DeScore checkpoint folder
  train_file: pairs/train.csv         # VideoAlign columns + CoT_A, CoT_B
  eval_file: pairs/test.csv
  dimension: TA
  output_dir: runs/stage1
  cot_mask_prob: 0.5                  # 1.0: think-free discriminative baseline

Resuming continues exactly from the newest checkpoint in output_dir: set `resume: true` or pass --resume.
The final model (LoRA merged) is written to OUTPUT_DIR/final and loads with DeScore.from_pretrained.
"""


def _run_cold_start(args: argparse.Namespace) -> int:
    from descore.training.cold_start import ColdStartConfig, ColdStartTrainer

    result = ColdStartTrainer(_config_from_args(ColdStartConfig, args)).train()
    print(f"trained {result.steps} steps; model written to {result.final_dir}")
    _print_evaluations(result.evaluations)
    return 0


SFT_EPILOG = """\
The config is a YAML file whose keys are these fields (unknown keys are errors):

{fields}

Example:
  model: tiny-qwen3-vl/               # base Qwen-VL checkpoint (or a DeScore checkpoint)
  model_config: {{template: compact_alignment_judge}}
  train_file: pairs/train.csv         # its CoT_A / CoT_B columns are the texts to learn
  eval_file: pairs/test.csv
  output_dir: runs/sft
  lora_r: null                        # train every language-model weight (a randomly initialised backbone)

The final model (OUTPUT_DIR/final) is a DeScore checkpoint with an UNTRAINED head: the start of stage 1.
"""

DUAL_RL_EPILOG = """\
The config is a YAML file whose keys are these fields (unknown keys are errors):

{fields}

Example:
  model: runs/stage1/final            # a DeScore checkpoint (stage 1's output)
  train_file: pairs/train.csv         # labels + gt_<dimension>_A / gt_<dimension>_B sub-scores
  eval_file: pairs/test.csv
  dimension: Overall
  output_dir: runs/stage2
  group_size: 8

Resuming continues exactly from the newest checkpoint in output_dir: set `resume: true` or pass --resume.
The final model (LoRA merged) is written to OUTPUT_DIR/final and loads with DeScore.from_pretrained.
"""


def _config_from_args(config_class: Any, args: argparse.Namespace) -> Any:
    from descore.training.config import parse_overrides

    overrides = parse_overrides(args.set or [])
    if args.resume:
        overrides["resume"] = True
    return config_class.from_yaml(args.config, overrides)


def _print_evaluations(evaluations: dict[str, Any]) -> None:
    for mode, evaluation in evaluations.items():
        for name, report in evaluation.dimensions.items():
            print(
                f"  eval {mode} {name}: accuracy {report.without_ties.accuracy:.4f}, "
                f"with ties {report.with_ties.accuracy:.4f}"
            )


def _run_sft(args: argparse.Namespace) -> int:
    from descore.training.sft import SFTConfig, SFTTrainer

    result = SFTTrainer(_config_from_args(SFTConfig, args)).train()
    print(f"trained {result.steps} steps; model written to {result.final_dir}")
    for name, value in result.evaluation.items():
        print(f"  eval {name}: {value:.4f}")
    return 0


def _run_dual_rl(args: argparse.Namespace) -> int:
    from descore.training.dual_rl import DualRLConfig, DualRLTrainer

    result = DualRLTrainer(_config_from_args(DualRLConfig, args)).train()
    print(f"trained {result.steps} steps; model written to {result.final_dir}")
    _print_evaluations(result.evaluations)
    return 0


def _add_stage(
    stages: argparse._SubParsersAction, name: str, config_class: Any, epilog: str, func: Any, **texts: str
) -> None:
    from descore.training.config import describe_fields

    p = stages.add_parser(
        name,
        epilog=epilog.format(fields=describe_fields(config_class)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **texts,
    )
    p.add_argument(
        "--config", required=True, metavar="FILE", help=f"YAML file of {config_class.__name__} fields"
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config field (VALUE is read as YAML); repeatable",
    )
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    p.set_defaults(func=func)


def _run_eval(args: argparse.Namespace) -> int:
    import torch

    from descore.evaluation import evaluate_pairs, format_report, write_evaluation
    from descore.pairs import load_pairs
    from descore.scoring import DeScore

    mode = args.mode
    pairs = load_pairs(args.pairs, video_root=args.video_root, dimension=args.dimension)
    kwargs: dict[str, Any] = {}
    if args.dtype:
        kwargs["dtype"] = getattr(torch, args.dtype)
    scorer = DeScore.from_pretrained(args.model, **kwargs)
    if args.device:
        scorer.model.to(args.device)
    generation = {} if args.max_new_tokens is None else {"max_new_tokens": args.max_new_tokens}
    evaluation = evaluate_pairs(
        scorer,
        pairs,
        mode=mode,
        dimensions=[args.dimension] if args.dimension else None,
        batch_size=args.batch_size,
        generation=generation,
    )
    out_dir = Path(args.out) if args.out else Path(f"eval_{Path(args.pairs).stem}_{mode}")
    _, summary = write_evaluation(evaluation, pairs, out_dir, info={"model": str(args.model)})
    if args.json:
        sys.stdout.write(summary.read_text())
    else:
        print(format_report(evaluation))
        print(f"results and summary written to {out_dir}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` and ``eval`` sub-commands."""
    from descore.training.cold_start import ColdStartConfig
    from descore.training.config import describe_fields

    train = sub.add_parser(
        "train",
        help="train a DeScore reward model",
        description="Train a DeScore reward model. Stages: sft (optional: teach a backbone to write the judge's CoT), "
        "cold-start (stage 1, Bradley-Terry on preference pairs), dual-rl (stage 2, GRPO on sampled CoTs + "
        "auxiliary Bradley-Terry).",
    )
    stages = train.add_subparsers(dest="stage", metavar="STAGE", required=True)
    p = stages.add_parser(
        "cold-start",
        help="stage 1: LoRA + query token + head on preference pairs with a random CoT mask",
        description="Stage 1 (discriminative cold start) from a YAML config.",
        epilog=TRAIN_EPILOG.format(fields=describe_fields(ColdStartConfig)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, metavar="FILE", help="YAML file of ColdStartConfig fields")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config field (VALUE is read as YAML); repeatable",
    )
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    p.set_defaults(func=_run_cold_start)
    from descore.training.dual_rl import DualRLConfig
    from descore.training.sft import SFTConfig

    _add_stage(
        stages,
        "sft",
        SFTConfig,
        SFT_EPILOG,
        _run_sft,
        help="optional: teacher-forced SFT on annotated chains of thought (before stage 1)",
        description="CoT SFT from a YAML config: the backbone learns to write the judge's chain of thought.",
    )
    _add_stage(
        stages,
        "dual-rl",
        DualRLConfig,
        DUAL_RL_EPILOG,
        _run_dual_rl,
        help="stage 2: GRPO on sampled CoTs + auxiliary Bradley-Terry on the head",
        description="Stage 2 (dual-objective RL) from a YAML config.",
    )

    p = sub.add_parser(
        "eval",
        help="pair accuracy of a DeScore model on a preference-pair file",
        description="Score every distinct video of a pair file once and report accuracy with and without ties "
        "(tie-calibrated, with its threshold) per label dimension. Writes per-pair results (Reward_A, Reward_B, "
        "CoT_A, CoT_B) and summary.json to --out.",
    )
    p.add_argument("--model", required=True, help="DeScore checkpoint directory")
    p.add_argument("--pairs", required=True, metavar="FILE", help="pair file (CSV or JSONL)")
    p.add_argument("--dimension", default=None, help="label column to report (default: every label column)")
    modes = p.add_mutually_exclusive_group()
    modes.add_argument(
        "--think", dest="mode", action="store_const", const="think", help="write a CoT, then score (default)"
    )
    modes.add_argument(
        "--no-think", dest="mode", action="store_const", const="no_think", help="think-free: one forward pass"
    )
    modes.add_argument(
        "--given-cot",
        dest="mode",
        action="store_const",
        const="given_cot",
        help="score with the file's CoT_A / CoT_B",
    )
    p.set_defaults(mode="think")
    p.add_argument("--out", default=None, help="output folder (default: ./eval_<pairs name>_<mode>)")
    p.add_argument("--video-root", default=None, help="folder relative video paths resolve against")
    p.add_argument("--batch-size", type=int, default=8, help="inputs per backbone batch (default 8)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None, help="backbone dtype")
    p.add_argument("--device", default=None, help="device to run on, e.g. cuda:0 (default: cpu)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="cap on CoT length in think mode")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_run_eval)


__all__ = ["register"]
