"""``resolab train``: one job of a suite in this process, without Ray or MLflow; results as files in --out."""
from __future__ import annotations

import logging
from pathlib import Path

from orchestrator.cli.common import UsageError, add_overrides, check_device

logger = logging.getLogger(__name__)


def pick_job(suite, name: str | None):
    """The job --job names; a suite of one job needs no --job."""
    if name is None and len(suite.jobs) == 1:
        return suite.jobs[0]
    names = [j.name for j in suite.jobs]
    if name is None:
        raise SystemExit(f"{suite.path} defines {len(names)} jobs; pick one with --job NAME:\n  " + "\n  ".join(names)
                         + "\n(or run them all on Ray with `resolab run`)")
    for job in suite.jobs:
        if job.name == name:
            return job
    raise SystemExit(f"no job named {name!r} in {suite.path}; jobs are:\n  " + "\n  ".join(names))


def train_command(args) -> int:
    from jobspec import load_suite

    suite = load_suite(args.config, args.set, smoke=args.smoke)
    job = pick_job(suite, args.job)
    if suite.smoke_note:
        logger.info(suite.smoke_note)
    device = check_device(args.device)
    # torch loads here (seconds), after the config and --device are checked.
    from analysis.predictions import PREDICTIONS_NAME, write_predictions
    from orchestrator.engine.job import run_job
    from orchestrator.engine.loop import LocalRuntime

    out = Path(args.out) if args.out else Path("runs") / suite.name / job.name
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the output directory {out} ({exc.strerror or exc}); "
                         "choose another --out") from None
    logger.info(f"job {job.name} (hash {job.hash}) -> {out}")
    result = run_job(job.config, LocalRuntime(out, device=device), job.hash)
    print(result.matrix.to_text())
    result.matrix.frame.to_csv(out / "matrix.csv", index=False)
    logger.info(f"wrote {out / 'matrix.csv'}")
    if result.matrix.predictions is not None:
        written = write_predictions(result.matrix.predictions, out / PREDICTIONS_NAME)
        logger.info(f"wrote {written} (per-image top-1)")
    if result.matrix.gap_cdf is not None:
        result.matrix.gap_cdf.to_parquet(out / "gap_cdf.parquet", index=False)
        logger.info(f"wrote {out / 'gap_cdf.parquet'} (GAP activation quantiles)")
    return 0


def add_subcommand(sub) -> None:
    p = sub.add_parser("train", help="train one job in this process and print its accuracy matrix")
    p.add_argument("config", help="experiment YAML (experiments/*.yaml)")
    add_overrides(p)
    p.add_argument("--job", help="job name, when the file defines several")
    p.add_argument("--out", help="output directory (default runs/<suite>/<job>)")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--smoke", action="store_true", help="tiny data and a few steps")
    p.set_defaults(func=train_command)
