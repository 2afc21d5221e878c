"""The ``spkver`` command line: prepare | train | extract | score | eval | calibrate | table | demo | system | verify |
embed.

Each sub-command is a thin wrapper over a library function. ``score`` and ``eval`` only touch the numpy
back-end (``scoring``) and never import torch, so they start fast and run where torch is absent.

Results (tables) go to stdout, logs and progress bars to stderr, so ``spkver ... > results`` holds only
results. Logging: INFO by default, ``-v`` for DEBUG, ``-q`` for warnings only; bars appear only on a terminal.
"""

from __future__ import annotations

import argparse
import logging
import sys

from spkver import __version__
from spkver.cli.common import FORMATS, CliError
from spkver.cli.data import _add_prepare
from spkver.cli.models import _add_demo, _add_export, _add_extract, _add_train
from spkver.cli.scoring import _add_calibrate, _add_eval, _add_score, _add_table
from spkver.cli.verify import _add_embed, _add_system, _add_verify
from spkver.progress import configure_logging

__all__ = ["main", "build_parser", "CliError"]


# ------------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spkver", description="Speaker verification with Bayesian x-vectors.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=FORMATS)
    parser.add_argument("--version", action="version", version=f"spkver {__version__}")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="store_const", const=logging.DEBUG, dest="log_level",
                          default=logging.INFO, help="also log debugging details (before the sub-command)")
    loudness.add_argument("-q", "--quiet", action="store_const", const=logging.WARNING, dest="log_level",
                          help="log only warnings and errors (before the sub-command)")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_prepare, _add_train, _add_extract, _add_score, _add_eval, _add_calibrate, _add_table, _add_demo,
                _add_export, _add_system, _add_verify, _add_embed):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        args.func(args)
    except (CliError, ValueError, FileNotFoundError) as err:
        print(f"spkver {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0

