"""Rebuild the papers' tables and figures from the MLflow runs that ``resolab run`` recorded.

    python analysis/make_tables.py                      # every table whose suite has runs
    python analysis/make_tables.py rsnets_table2 --format latex --out tables/
    python analysis/make_tables.py quickstart --suite my_suite --no-log
    python analysis/make_tables.py rsnets_table2 --ci   # 95% bootstrap intervals (seeds, images) on the gains
    python analysis/make_tables.py search --suite NAME  # what a suite's search found
    python analysis/make_tables.py --list

Reads FINISHED job runs (tag resolab.kind = job) of each table's suite (= MLflow experiment), newest
per config hash; prints Markdown (or LaTeX / CSV) on stdout; with --out writes one file per table
plus the PNG figures; unless --no-log, logs each table and figure under ``tables/`` of the suite's
newest parent run (tag resolab.kind = suite), or of a run named ``tables`` created for it.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml

if __name__ == "__main__" and __package__ in (None, ""):
    # Run as a script: import the project packages from the repository root, not from analysis/.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from jobspec import PROJECT_ROOT
from jobspec.console import configure_logging
from jobspec.one_line_parser import ArgumentParser
from analysis.tables.registry import TABLES, TableSpec, list_tables
from records.store import resolve_tracking_uri, store_is_empty

# pandas, MLflow and the table builders (torch, matplotlib) are imported inside the functions that
# build a table, so that --list and --help answer at once.

# Status lines and one-line errors, on stderr (``jobspec.console``): stdout is the tables'. Named, not
# __name__, which is "__main__" when this file runs as a script and would fall outside analysis's logger.
logger = logging.getLogger("analysis.make_tables")

QUICKSTART_COMMAND = "resolab run experiments/quickstart.yaml"
FORMATS = ("md", "latex", "csv")  # analysis.tables.render.RENDERERS


def _resample_count(text: str) -> int:
    """argparse type of --ci-resamples: a 95% percentile interval needs at least 100 resamples."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 100:
        raise argparse.ArgumentTypeError(f"expected at least 100 resamples for a 95% interval, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of this script, which ``resolab tables`` takes too."""
    parser.add_argument("tables", nargs="*", metavar="TABLE", help=f"any of: {', '.join(TABLES)} (default: all with runs)")
    parser.add_argument("--tracking-uri", help="MLflow store (default: MLFLOW_TRACKING_URI, else the project's SQLite file)")
    parser.add_argument("--suite", help="read this suite (MLflow experiment) instead of the tables' default suites")
    parser.add_argument("--filter", help="extra MLflow filter, ANDed with the job filter, e.g. \"params.`train.epochs` = '120'\"")
    parser.add_argument("--format", choices=list(FORMATS), default="md")
    parser.add_argument("--out", type=Path, help="write each table (in --format) and its PNG figures here")
    parser.add_argument("--no-log", action="store_true", help="do not log the tables to the suite's parent run")
    parser.add_argument("--digits", type=int, help="decimals of accuracies (default: 2 for SAN tables, 1 for RS-Nets)")
    parser.add_argument("--list", action="store_true", help="list the known tables and the suites they read")
    parser.add_argument("--ci", action="store_true", help="add a 95%% bootstrap interval over seeds and validation images "
                                                          "to every top-1 gain over I-Nets (needs per-image predictions)")
    parser.add_argument("--ci-resamples", type=_resample_count, default=1000, metavar="N",
                        help="bootstrap resamples, at least 100 (default 1000)")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="make_tables.py", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return parser


def suite_file(suite: str) -> str:
    """The experiments/*.yaml whose ``name:`` is ``suite`` (relative to the project), else the convention."""
    for path in sorted((PROJECT_ROOT / "experiments").rglob("*.yaml")):
        try:
            name = (yaml.safe_load(path.read_text()) or {}).get("name")
        except (OSError, yaml.YAMLError, AttributeError):
            continue
        if name == suite:
            return str(path.relative_to(PROJECT_ROOT))
    return f"experiments/{suite}.yaml"


def run_command(suite: str) -> str:
    return f"resolab run {suite_file(suite)}"


def _nothing_there(uri: str, client) -> int:
    from analysis.tables.store import suites_with_job_runs  # MLflow, pandas: seconds

    other = suites_with_job_runs(client) if client is not None else []
    if other:
        logger.info(f"No runs of the known tables' suites in {uri}; suites with job runs: {', '.join(other)}.\n"
             f"Render one with: python analysis/make_tables.py quickstart --suite {other[0]}")
    else:
        logger.info(f"No resolab job runs in {uri} yet. Fill it with:\n  {QUICKSTART_COMMAND}\n"
             "then run: python analysis/make_tables.py")
    return 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    return run(args)


def run(args, prog: str = "make_tables") -> int:
    """The command on parsed options; ``prog`` starts each one-line error."""
    if args.list:
        print(list_tables())
        return 0
    unknown = [name for name in args.tables if name not in TABLES]
    if unknown:
        logger.error(f"{prog}: unknown table(s) {', '.join(unknown)}; choose from {', '.join(TABLES)} "
                     "(--list says more)")
        return 2
    uri = resolve_tracking_uri(args.tracking_uri)
    if store_is_empty(uri):
        return _nothing_there(uri, None)
    from records.store import TrackingUnavailable, check_tracking

    try:
        check_tracking(uri)  # seconds, where MLflow's client retries an unreachable server for minutes
    except TrackingUnavailable as exc:
        logger.error(f"{prog}: {exc}")
        return 2
    if args.out:
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            logger.error(f"{prog}: cannot create the --out folder {args.out} ({exc.strerror or exc}); choose another")
            return 2
    # MLflow and pandas load only once the store is known to answer.
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from analysis.tables.store import SuiteRuns

    client = MlflowClient(uri)
    try:
        return _make_tables(args, uri, client, SuiteRuns(client, args.filter))
    except MlflowException as exc:  # a bad --filter, an unreachable server: one line, not a traceback
        logger.error(f"{prog}: {getattr(exc, 'message', exc)}")
        return 2


def _make_tables(args, uri: str, client, runs) -> int:
    import pandas as pd

    from analysis.report import read_gap_cdf, read_predictions
    from analysis.tables.render import write_table_files
    from analysis.tables.store import RunArtifact, log_table

    def suites_of(spec: TableSpec) -> tuple[str, ...]:
        return (args.suite,) if args.suite else spec.suites

    artifact_options = {"predictions": RunArtifact(client, read_predictions), "ci": _bootstrap(args),
                        "gap_cdf": RunArtifact(client, read_gap_cdf)}
    digits = {"digits": args.digits} if args.digits is not None else {}
    # With --suite alone, the paper tables render that suite; its search table is asked for by name.
    names = args.tables or [spec.name for spec in TABLES.values() if any(map(runs.has, suites_of(spec)))
                            and not (args.suite and spec.name == "search")]
    if not names and args.suite and runs.has(args.suite):
        names = ["quickstart"]  # a suite of its own: the generic I-Nets vs methods overview
    if not names:
        return _nothing_there(uri, client)
    printed = 0
    for name in names:
        spec = TABLES[name]
        suites = [s for s in suites_of(spec) if runs.has(s)]
        if not suites:
            logger.info(f"{name}: no finished job runs in suite {' / '.join(suites_of(spec))} of {uri} — run: "
                        + " or ".join(run_command(s) for s in suites_of(spec)))
            continue
        table = spec.build(pd.concat([runs(s) for s in suites], ignore_index=True),
                           [run_command(s) for s in suites_of(spec)], **digits, **artifact_options)
        _emit(table, args.format, header=printed == 0)
        printed += 1
        if args.out:
            write_table_files(table, args.out, formats=(args.format,))
        if not args.no_log:
            run_id = log_table(client, suites[0], table)
            logger.info(f"{name}: logged under tables/ of run {run_id} (experiment {suites[0]})")
    return 0 if printed else 1


def _bootstrap(args):
    if not args.ci:
        return None
    from analysis.bootstrap import Bootstrap
    return Bootstrap(resamples=args.ci_resamples)


def _emit(table, fmt: str, header: bool) -> None:
    from analysis.tables import render

    if fmt == "csv":  # keep stdout one valid CSV; the lines under the table go to stderr
        sys.stdout.write(render.to_csv(table, header=header))
        for line in table.notes:
            logger.info(f"{table.name}: {line}")
        return
    if not header:
        print()
    sys.stdout.write(render.render(table, fmt))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        logger.warning("make_tables: interrupted")
        sys.exit(130)
