"""The ``resolab`` command line."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from backbones.catalog import BACKBONES, BN_CHOICES
from methods.catalog import METHODS


def _describe(args) -> int:
    from analysis.describe import describe
    from jobspec import DataConfig, JobConfig, MethodConfig, ModelConfig

    cfg = JobConfig(model=ModelConfig(backbone=args.backbone, small_input=args.small_input),
                    method=MethodConfig(name=args.method, bn=args.bn, convs=args.convs, meta_hidden=args.meta_hidden),
                    data=DataConfig(resolutions=sorted(args.resolutions, reverse=True)))
    info = describe(cfg, args.num_classes)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"{info['backbone']} / {info['method']}: {info['total_params']:,} params "
              f"({info['total_params_M']:.2f} x 2^20, {info['models']} model(s))")
        for r, m in info["madds"].items():
            print(f"  {r:>4} px: {m / 1e6:,.1f} M MAdds")
    return 0


def _pick_job(suite, name: str | None):
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


def _train(args) -> int:
    from analysis.predictions import PREDICTIONS_NAME, write_predictions
    from jobspec import load_suite
    from orchestrator.job import run_job
    from orchestrator.loop import LocalRuntime

    suite = load_suite(args.config, args.set, smoke=args.smoke)
    job = _pick_job(suite, args.job)
    out = Path(args.out) if args.out else Path("runs") / suite.name / job.name
    out.mkdir(parents=True, exist_ok=True)
    print(f"job {job.name} (hash {job.hash}) -> {out}")
    result = run_job(job.config, LocalRuntime(out, device=args.device), job.hash)
    print(result.matrix.to_text())
    result.matrix.frame.to_csv(out / "matrix.csv", index=False)
    print(f"wrote {out / 'matrix.csv'}")
    if result.matrix.predictions is not None:
        print(f"wrote {write_predictions(result.matrix.predictions, out / PREDICTIONS_NAME)} (per-image top-1)")
    if result.matrix.gap_cdf is not None:
        result.matrix.gap_cdf.to_parquet(out / "gap_cdf.parquet", index=False)
        print(f"wrote {out / 'gap_cdf.parquet'} (GAP activation quantiles)")
    return 0


def _run(args) -> int:
    from jobspec import load_suite
    from orchestrator.suite import RunOptions, run_suite

    suite = load_suite(args.suite, args.set, smoke=args.smoke)
    if args.dry_run:
        print(suite.table())
        return 0
    options = RunOptions(address=args.address, tracking_uri=args.tracking_uri, storage=args.storage,
                         reuse=not args.no_reuse)
    outcome = run_suite(suite, options)
    print(f"finished {len(outcome.finished)}, skipped (already finished) {len(outcome.skipped)}, "
          f"copied from other suites {len(outcome.reused)}, "
          f"failed {len(outcome.failed)}")
    if outcome.overhead_line():
        print(outcome.overhead_line())
    for name, reason in outcome.failed.items():
        print(f"  FAILED {name}: {reason}")
    return 1 if outcome.failed else 0


# `resolab evaluate` exit codes: 0 when every job with a trained model is evaluated (jobs without one are
# listed, not an error: a suite may add models nobody trained yet); 1 when an evaluation failed; 3 when
# no job of the suite has a trained model (wrong --tracking-uri or --storage, or nothing trained yet).
NOTHING_TO_EVALUATE = 3


def _evaluate(args) -> int:
    from jobspec import load_suite
    from orchestrator.evaluate_only import evaluate_suite
    from orchestrator.suite import RunOptions

    suite = load_suite(args.suite, args.set, smoke=args.smoke)
    options = RunOptions(address=args.address, tracking_uri=args.tracking_uri, storage=args.storage)
    outcome = evaluate_suite(suite, options)
    print(f"evaluated {len(outcome.evaluated)}, skipped (already finished) {len(outcome.skipped)}, "
          f"copied from other suites {len(outcome.reused)}, failed {len(outcome.failed)}, "
          f"without a trained model {len(outcome.untrained)}")
    for name, reason in outcome.untrained.items():
        print(f"  NO MODEL {name}: {reason}")
    for name, reason in outcome.failed.items():
        print(f"  FAILED {name}: {reason}")
    if outcome.failed:
        return 1
    return NOTHING_TO_EVALUATE if len(outcome.untrained) == len(suite.jobs) else 0


def _status(args) -> int:
    from jobspec import load_suite
    from orchestrator.status import suite_status

    suite = load_suite(args.suite, args.set, smoke=args.smoke)
    print(suite_status(suite, args.tracking_uri, args.storage))
    return 0


def _suite_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", help="experiment YAML (experiments/*.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override, repeatable")
    p.add_argument("--smoke", action="store_true", help="tiny data and a few steps (every suite supports it)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                                          "sqlite:///<project>/.resolab/mlflow.db)")
    p.add_argument("--storage", help="checkpoint storage; shared storage on a multi-node cluster "
                                     "(default <project>/.resolab/ray)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resolab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("describe", help="parameters and MAdds of a method's model (RS-Nets Table 2 style)")
    p.add_argument("--backbone", required=True, choices=list(BACKBONES))
    p.add_argument("--method", default="rsnet", choices=list(METHODS))
    p.add_argument("--resolutions", type=int, nargs="+", default=[224, 192, 160, 128, 96])
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--bn", default="private", choices=BN_CHOICES)
    p.add_argument("--convs", default="meta", choices=["meta", "private"], help="san only")
    p.add_argument("--meta-hidden", type=int, default=0, help="san only")
    p.add_argument("--small-input", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_describe)

    p = sub.add_parser("train", help="train one job in this process and print its accuracy matrix")
    p.add_argument("config", help="experiment YAML (experiments/*.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override, repeatable")
    p.add_argument("--job", help="job name, when the file defines several")
    p.add_argument("--out", help="output directory (default runs/<suite>/<job>)")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--smoke", action="store_true", help="tiny data and a few steps")
    p.set_defaults(func=_train)

    p = sub.add_parser("run", help="run a suite's jobs on Ray (local, or a cluster with --address)")
    _suite_arguments(p)
    p.add_argument("--address", help="Ray cluster: auto or ray://host:port (default: start a local Ray)")
    p.add_argument("--dry-run", action="store_true", help="print the job table and exit")
    p.add_argument("--no-reuse", action="store_true",
                   help="train every job, even one whose config already finished in another suite "
                        "(by default that run is copied into this suite)")
    p.set_defaults(func=_run)

    p = sub.add_parser("evaluate", help="evaluate a suite's jobs from models already trained (same training "
                                        "config, other eval settings); trains nothing, lists jobs without a model")
    _suite_arguments(p)
    p.add_argument("--address", help="Ray cluster: auto or ray://host:port (default: start a local Ray)")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("status", help="jobs done / running / failed / pending of a suite")
    _suite_arguments(p)
    p.set_defaults(func=_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as exc:  # a clear one-line reason instead of a traceback for known user errors
        from orchestrator.data import DatasetError
        from orchestrator.mlflow_sink import TrackingUnavailable
        from jobspec import ConfigError
        if isinstance(exc, ConfigError):
            print(f"resolab: config error: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, (TrackingUnavailable, DatasetError)):
            print(f"resolab: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
