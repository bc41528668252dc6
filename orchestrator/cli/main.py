"""The resolab command line: the parser of every subcommand, and the one-line report of a user error.

An error the user can fix (a config typo, missing data, an unreachable tracking store, a bad option)
ends the command with one line on stderr and exit status 2; ``resolab --debug`` shows its traceback.
Status lines go through ``logging``, set up here once (``jobspec.console``); ``--debug`` shows DEBUG too.
"""
from __future__ import annotations

import argparse
import logging
import sys

from jobspec.console import configure_logging
from jobspec.one_line_parser import ArgumentParser
from orchestrator.cli import deploy, describe, suite, tables, train
from orchestrator.cli.common import UsageError, user_error

__all__ = ["UsageError", "build_parser", "main", "user_error"]

logger = logging.getLogger("orchestrator.cli.main")  # not __name__: "__main__" under python -m

DESCRIPTION = """Train and evaluate resolution-switchable image classifiers (RS-Nets, SAN and their
baselines): the jobs of a suite (experiments/*.yaml) run on Ray and are recorded in MLflow.

Start with:  resolab run experiments/quickstart.yaml
Tables:      resolab tables quickstart  (or: python analysis/make_tables.py quickstart)"""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="resolab", description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show its traceback, not one line; also show debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    describe.add_subcommand(sub)
    train.add_subcommand(sub)
    suite.add_subcommands(sub)  # run, evaluate, status
    deploy.add_subcommands(sub)  # import-reference, export, pick, evaluate-model
    tables.add_subcommand(sub)
    # --debug after the command too; SUPPRESS: where it is not given there, the top-level value stays.
    for p in sub.choices.values():
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="on an error, show its traceback, not one line; also show debug messages")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(debug=args.debug)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        logger.warning("resolab: interrupted; what finished is kept. Run the same command again to go on from there.")
        return 130
    except Exception as exc:
        reason = None if args.debug else user_error(exc)
        if reason is None:
            raise
        logger.error("resolab: %s", reason)
        return 2


if __name__ == "__main__":
    sys.exit(main())
