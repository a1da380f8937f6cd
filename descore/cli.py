"""The `descore` command line.

Sub-commands of the reward-model package are defined here; packages higher in the stack (toy world, pipelines,
recipes) add theirs through the ``descore.commands`` entry-point group, so this module never imports them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "descore.commands"

DESCRIPTION = """\
descore: think-then-score video reward models.

Score generated videos with a DeScore reward model, train one with the two-stage recipe, rerank and guide
diffusers video pipelines with it, and fine-tune a generator against it. Every command runs offline on local
checkpoints; `descore COMMAND --help` describes each one.
"""


def _load_plugins() -> list[tuple[str, Callable[[argparse._SubParsersAction], None]]]:
    plugins = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        plugins.append((ep.name, ep.load()))
    return plugins


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, including the sub-commands registered by installed packages."""
    parser = argparse.ArgumentParser(
        prog="descore", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from descore import commands

    commands.register(sub)
    for _name, register in _load_plugins():
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from descore.errors import DeScoreError

    try:
        result = args.func(args)
    except DeScoreError as err:
        print(f"descore {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
