"""``descore toy``: build a toy preference dataset, render a prompt, analyze a video.

Registered through the ``descore.commands`` entry point, so ``descore`` itself never imports the toy world.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from descore.errors import ConfigError
from descore.video_io import write_video
from toyworld.analyzer import analyze
from toyworld.dataset import COT_STYLES, build_dataset
from toyworld.defects import DEFECT_KINDS, Defect, apply_defects, ground_truth
from toyworld.prompts import parse_prompt
from toyworld.render import render
from toyworld.scene import WorldConfig, sample_scene

logger = logging.getLogger(__name__)


def _world_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--frames", type=int, default=9, help="frames per video (default 9: fits 4k+1 and 8k+1)"
    )
    parser.add_argument("--height", type=int, default=64, help="frame height in pixels (default 64)")
    parser.add_argument("--width", type=int, default=64, help="frame width in pixels (default 64)")
    parser.add_argument(
        "--fps", type=int, default=8, help="frames per second written to the files (default 8)"
    )


def _config(args: argparse.Namespace) -> WorldConfig:
    return WorldConfig(num_frames=args.frames, height=args.height, width=args.width, fps=args.fps)


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected three comma-separated fractions, got {text!r}") from err


def _defect(text: str) -> Defect:
    """KIND[:SEVERITY[:TARGET[:VALUE]]], e.g. ``flicker:0``, ``wrong_color:0:0:blue``, ``unwanted_pan:0::pan_left``."""
    parts = text.split(":")
    kind = parts[0]
    if kind not in DEFECT_KINDS:
        raise argparse.ArgumentTypeError(f"unknown defect {kind!r}; expected one of {sorted(DEFECT_KINDS)}")
    info = DEFECT_KINDS[kind]
    try:
        severity = int(parts[1]) if len(parts) > 1 and parts[1] else info.severities[0]
        target = int(parts[2]) if len(parts) > 2 and parts[2] else (0 if info.per_object else None)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"bad defect {text!r}: severity and target are integers") from err
    value = parts[3] if len(parts) > 3 and parts[3] else None
    try:
        return Defect(kind, severity, target, value)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _run_build(args: argparse.Namespace) -> int:
    summary = build_dataset(
        args.out,
        args.pairs,
        args.seed,
        config=_config(args),
        videos_per_prompt=args.videos_per_prompt,
        split_fractions=args.splits,
        label_noise=args.label_noise,
        cot_style=args.cot_style,
        crf=args.crf,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    counts = ", ".join(f"{split} {n}" for split, n in summary.pairs.items())
    print(
        f"wrote {sum(summary.pairs.values())} pairs ({counts}) and {summary.videos} videos to {summary.out_dir}"
    )
    return 0


def _run_render(args: argparse.Namespace) -> int:
    config = _config(args)
    spec = parse_prompt(args.prompt)
    rng = np.random.default_rng(args.seed)
    scene = sample_scene(rng, config, spec=spec)
    shown = apply_defects(scene, args.defect, config)
    path = write_video(render([shown], config)[0], args.out, fps=config.fps)
    scores = ground_truth(scene, args.defect)
    print(f"wrote {path}; ground truth: {json.dumps(scores)}")
    return 0


def _run_analyze(args: argparse.Namespace) -> int:
    if not Path(args.video).exists():
        raise ConfigError(f"{args.video}: no such file or folder")
    result = analyze(args.video, args.prompt)
    if args.json:
        payload = {
            "subscores": result.subscores,
            "overall": result.overall,
            "findings": list(result.findings),
            "background": result.background,
            "texture": result.texture,
            "camera": result.camera,
            "objects": [
                {
                    **dataclasses.asdict(o),
                    "positions": [None if np.isnan(x) else [x, y] for x, y in o.positions],
                }
                for o in result.objects
            ],
            "flicker": result.flicker,
            "noise": result.noise,
            "sharpness": result.sharpness,
            "shake": result.shake,
        }
        print(json.dumps(payload, indent=2, default=float))
        return 0
    scores = ", ".join(f"{d} {'N/A' if v is None else v}" for d, v in result.subscores.items())
    print(f"overall {result.overall:.2f} ({scores})")
    for finding in result.findings:
        print(f"  - {finding}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``descore toy`` and its sub-commands to the descore command line."""
    toy = subparsers.add_parser(
        "toy",
        help="the toy world: procedural videos with known quality",
        description="A procedural video world where every video's true quality is known: build preference "
        "datasets in the real pair-file formats, render prompts, and measure any video against a prompt.",
    )
    commands = toy.add_subparsers(dest="toy_command", metavar="TOY_COMMAND")

    def show_help(_args: argparse.Namespace) -> int:
        toy.print_help()
        return 0

    toy.set_defaults(func=show_help)

    build = commands.add_parser(
        "build",
        help="write a toy preference dataset (mp4 videos + pair files)",
        description="Write train.csv, test_id.csv and test_ood.csv (VideoAlign columns, DeScore dimension labels, "
        "CoT_A/CoT_B, ground-truth sub-scores), the mp4 videos, videos.jsonl and world.json. "
        "The same seed writes byte-identical files.",
    )
    build.add_argument("--out", required=True, help="output folder (new or empty)")
    build.add_argument("--pairs", required=True, type=int, help="number of pairs over all splits")
    build.add_argument("--seed", required=True, type=int, help="random seed")
    build.add_argument(
        "--videos-per-prompt", type=int, default=2, help="videos per prompt; all their pairs kept"
    )
    build.add_argument(
        "--splits", type=_fractions, default=(0.8, 0.1, 0.1), help="train,test_id,test_ood fractions"
    )
    build.add_argument("--label-noise", type=float, default=0.0, help="probability of flipping each label")
    build.add_argument(
        "--cot-style",
        choices=COT_STYLES,
        default="full",
        help="CoTs: full (the judge's three stages), brief (ratings and answer only) or track (where each object is "
        "per temporal slice, then seen vs asked, from the analyzer)",
    )
    build.add_argument("--crf", type=int, default=None, help="H.264 quality (lower is better; default 18)")
    build.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    _world_options(build)
    build.set_defaults(func=_run_build)

    render_cmd = commands.add_parser(
        "render",
        help="render one prompt to a video file (mp4, webm or gif)",
        description="Render a toy-world prompt, optionally with defects written KIND[:SEVERITY[:TARGET[:VALUE]]] "
        f"(kinds: {', '.join(DEFECT_KINDS)}), and print its ground-truth sub-scores.",
    )
    render_cmd.add_argument(
        "prompt", help='e.g. "a big red circle moving left on a gray background, static camera"'
    )
    render_cmd.add_argument("--out", required=True, help="video file to write (.mp4, .webm, .gif)")
    render_cmd.add_argument("--seed", type=int, default=0, help="random seed for the layout and effects")
    render_cmd.add_argument(
        "--defect", type=_defect, action="append", default=[], help="a defect (repeatable)"
    )
    _world_options(render_cmd)
    render_cmd.set_defaults(func=_run_render)

    analyze_cmd = commands.add_parser(
        "analyze",
        help="measure a video of the toy world and score it against a prompt",
        description="Measure colours, shapes, motion, background, camera, flicker, noise and blur from the pixels "
        "of a video and print the judge's sub-scores against the prompt.",
    )
    analyze_cmd.add_argument("video", help="video file or folder of frames")
    analyze_cmd.add_argument("--prompt", required=True, help="the prompt the video was made for")
    analyze_cmd.add_argument("--json", action="store_true", help="print all measurements as JSON")
    analyze_cmd.set_defaults(func=_run_analyze)

    from toyworld.descore_recipe import add_descore_commands
    from toyworld.generator import add_generator_commands

    add_generator_commands(commands)
    add_descore_commands(commands)
