"""``resolab run``, ``evaluate`` and ``status``: a suite's jobs on Ray, recorded in MLflow, and where they stand.

Ray, MLflow and torch load only after the suite file and the tracking server are checked, so a typo
or an unreachable server is one line within a second; ``status`` never loads Ray.
"""
from __future__ import annotations

import argparse
import logging

from orchestrator.cli.common import add_overrides, check_server

logger = logging.getLogger(__name__)

STATUS_STATES = """Where each job of a suite stands, from MLflow and the job checkpoints. Job states:
  done         a FINISHED run of the job's config: trained here, copied from another
               suite, or evaluated from a model trained before
  running      the `resolab run` (or `resolab evaluate`) driving it is working on it
  interrupted  its run was stopped by Ctrl-C (KILLED), or was running or queued but
               the command driving it is gone; run the same `resolab run` again
               to resume it
  stopped      a sample of the suite's search that its scheduler stopped early
               (FINISHED, no matrix, checkpoint kept); `resolab run
               --resume-stopped` trains it to the end
  failed       its newest run failed; the reason is shown
  pending      not started yet
Each job's line shows its MLflow run id (a done job's is what `resolab export`
and `resolab pick` take)."""

# `resolab evaluate` exit codes: 0 when every job with a trained model is evaluated (jobs without one are
# listed, not an error: a suite may add models nobody trained yet); 1 when an evaluation failed; 3 when
# no job of the suite has a trained model (wrong --tracking-uri or --storage, or nothing trained yet).
NOTHING_TO_EVALUATE = 3


def run_command(args) -> int:
    from jobspec import load_suite

    suite = load_suite(args.suite, args.set, smoke=args.smoke)
    if args.dry_run:
        print(suite.table())
        if suite.smoke_note:
            logger.info(suite.smoke_note)
        if any(job.config.data.dataset == "imagefolder" for job in suite.jobs):  # else no torch import (5 s)
            from orchestrator.data.loaders import check_suite_data
            for root, classes in check_suite_data(suite.jobs).items():  # a bad data.root: DatasetError, exit 2
                logger.info(f"data {root}: train/ and val/ hold the same {len(classes)} classes")
        return 0
    if suite.smoke_note:
        logger.info(suite.smoke_note)
    check_server(args.tracking_uri)
    from orchestrator.cluster.suite import RunOptions, run_suite  # Ray, MLflow, torch: seconds

    options = RunOptions(address=args.address, tracking_uri=args.tracking_uri, storage=args.storage,
                         reuse=not args.no_reuse, resume_stopped=args.resume_stopped)
    outcome = run_suite(suite, options)
    stopped = f"stopped early by the search {len(outcome.stopped)}, " if suite.search is not None else ""
    logger.info(f"finished {len(outcome.finished)}, {stopped}skipped (already finished) {len(outcome.skipped)}, "
          f"copied from other suites {len(outcome.reused)}, "
          f"failed {len(outcome.failed)}")
    if outcome.overhead_line():
        logger.info(outcome.overhead_line())
    for name, reason in outcome.failed.items():
        logger.info(f"  FAILED {name}: {reason}")  # INFO: a line of the summary above, on stdout with it
    return 1 if outcome.failed else 0


def evaluate_command(args) -> int:
    from jobspec import load_suite

    suite = load_suite(args.suite, args.set, smoke=args.smoke)
    check_server(args.tracking_uri)
    from orchestrator.cluster.suite import RunOptions, evaluate_suite  # Ray, MLflow, torch: seconds

    options = RunOptions(address=args.address, tracking_uri=args.tracking_uri, storage=args.storage)
    outcome = evaluate_suite(suite, options)
    logger.info(f"evaluated {len(outcome.evaluated)}, skipped (already finished) {len(outcome.skipped)}, "
          f"copied from other suites {len(outcome.reused)}, failed {len(outcome.failed)}, "
          f"without a trained model {len(outcome.untrained)}")
    for name, reason in outcome.untrained.items():
        logger.info(f"  NO MODEL {name}: {reason}")
    for name, reason in outcome.failed.items():
        logger.info(f"  FAILED {name}: {reason}")
    if outcome.failed:
        return 1
    return NOTHING_TO_EVALUATE if len(outcome.untrained) == len(suite.jobs) else 0


def status_command(args) -> int:
    from jobspec import load_suite

    suite = load_suite(args.suite, args.set, smoke=args.smoke)
    check_server(args.tracking_uri)
    from orchestrator.cluster.status import suite_status  # MLflow, torch (never Ray): seconds

    print(suite_status(suite, args.tracking_uri, args.storage))
    return 0


def suite_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", help="experiment YAML (experiments/*.yaml)")
    add_overrides(p)
    p.add_argument("--smoke", action="store_true", help="tiny data and a few steps (every suite supports it)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                                          "sqlite:///<project>/.resolab/mlflow.db)")
    p.add_argument("--storage", help="where models, checkpoints and results live: a folder, or an object store "
                                     "(s3://bucket/prefix, gs://…; endpoint and credentials from AWS_ENDPOINT_URL, "
                                     "AWS_ACCESS_KEY_ID, …). On a multi-node cluster every node must reach it "
                                     "(default <project>/.resolab/ray)")


def add_subcommands(sub) -> None:
    p = sub.add_parser("run", help="run a suite's jobs on Ray (local, or a cluster with --address)")
    suite_arguments(p)
    p.add_argument("--address", help="Ray cluster: auto or ray://host:port (default: start a local Ray)")
    p.add_argument("--dry-run", action="store_true", help="print the job table and exit")
    p.add_argument("--no-reuse", action="store_true",
                   help="train every job, even one whose config already finished in another suite "
                        "(by default that run is copied into this suite)")
    p.add_argument("--resume-stopped", action="store_true",
                   help="train the search samples that a scheduler stopped early to their end (by default a "
                        "rerun leaves them stopped)")
    p.set_defaults(func=run_command)

    p = sub.add_parser("evaluate", help="evaluate a suite's jobs from models already trained (same training "
                                        "config, other eval settings); trains nothing, lists jobs without a model")
    suite_arguments(p)
    p.add_argument("--address", help="Ray cluster: auto or ray://host:port (default: start a local Ray)")
    p.set_defaults(func=evaluate_command)

    p = sub.add_parser("status", help="jobs done / running / interrupted / failed / pending of a suite",
                       description=STATUS_STATES, formatter_class=argparse.RawDescriptionHelpFormatter)
    suite_arguments(p)
    p.set_defaults(func=status_command)
