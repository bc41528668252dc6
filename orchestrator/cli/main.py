"""The resolab command line: describe, train, run, evaluate, status.

An error the user can fix (a config typo, missing data, an unreachable tracking store, a bad option)
ends the command with one line on stderr and exit status 2; ``resolab --debug`` shows its traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jobspec.one_line_parser import ArgumentParser, whole_number
from backbones.catalog import BACKBONES, BN_CHOICES
from methods.catalog import METHODS

DESCRIPTION = """Train and evaluate resolution-switchable image classifiers (RS-Nets, SAN and their
baselines): the jobs of a suite (experiments/*.yaml) run on Ray and are recorded in MLflow.

Start with:  resolab run experiments/quickstart.yaml
Tables:      python analysis/make_tables.py quickstart"""

STATUS_STATES = """Where each job of a suite stands, from MLflow and the job checkpoints. Job states:
  done         a FINISHED run of the job's config: trained here, copied from another
               suite, or evaluated from a model trained before
  running      the `resolab run` (or `resolab evaluate`) driving it is working on it
  interrupted  its run was stopped by Ctrl-C (KILLED), or was running or queued but
               the command driving it is gone; run the same `resolab run` again
               to resume it
  failed       its newest run failed; the reason is shown
  pending      not started yet
Each job's line shows its MLflow run id (a done job's is what `resolab export`
and `resolab pick` take)."""


class UsageError(ValueError):
    """A command-line value that cannot work; the message names the option and the fix."""


def _describe(args) -> int:
    from analysis.describe import describe, validated
    from jobspec import ConfigError, JobConfig
    from jobspec.schema import repeated_resolutions

    # A value the schema refuses, or a combination it refuses (validate), is a ConfigError that names it.
    # A resolution given twice is one. `individual` over several resolutions is the set of I-Nets
    # (RS-Nets Table 2's column): each of its one-resolution jobs is validated, not the set as one job.
    cfg = validated(JobConfig.parse({
        "model": {"backbone": args.backbone, "small_input": args.small_input, "weight_bits": args.weight_bits,
                  "act_bits": args.act_bits},
        "method": {"name": args.method, "bn": args.bn, "convs": args.convs, "meta_hidden": args.meta_hidden},
        "data": {"resolutions": sorted(args.resolutions, reverse=True)}}))
    # An I-Net set's rows are validated one by one, so a resolution listed twice is checked here.
    if repeated := repeated_resolutions(sorted(args.resolutions, reverse=True)):
        raise ConfigError(repeated)
    info = describe(cfg, args.num_classes)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    if info["models"] > 1:
        each = info["model_params"][0]
        print(f"{info['backbone']} / {info['method']}: a set of {info['models']} I-Nets, one per resolution: "
              f"{info['total_params']:,} params in all ({info['total_params_M']:.2f} x 2^20), "
              f"{each:,} ({each / 2**20:.2f} x 2^20) each")
        for r, m in info["madds"].items():
            print(f"  {r:>4} px: {m / 1e6:,.1f} M MAdds (its own I-Net)")
    else:
        print(f"{info['backbone']} / {info['method']}: {info['total_params']:,} params "
              f"({info['total_params_M']:.2f} x 2^20, 1 model)")
        for r, m in info["madds"].items():
            print(f"  {r:>4} px: {m / 1e6:,.1f} M MAdds")
    across = f" (across the {info['models']} models)" if info["models"] > 1 else ""
    print(f"  storage: {info['storage_bits']:g} bits per conv weight{across}, {info['size_MB']:g} MB")
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
    from jobspec import load_suite

    suite = load_suite(args.config, args.set, smoke=args.smoke)
    job = _pick_job(suite, args.job)
    if suite.smoke_note:
        print(suite.smoke_note)
    device = _device(args.device)
    from analysis.predictions import PREDICTIONS_NAME, write_predictions  # torch: seconds
    from orchestrator.engine.job import run_job
    from orchestrator.engine.loop import LocalRuntime

    out = Path(args.out) if args.out else Path("runs") / suite.name / job.name
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the output directory {out} ({exc.strerror or exc}); "
                         "choose another --out") from None
    print(f"job {job.name} (hash {job.hash}) -> {out}")
    result = run_job(job.config, LocalRuntime(out, device=device), job.hash)
    print(result.matrix.to_text())
    result.matrix.frame.to_csv(out / "matrix.csv", index=False)
    print(f"wrote {out / 'matrix.csv'}")
    if result.matrix.predictions is not None:
        print(f"wrote {write_predictions(result.matrix.predictions, out / PREDICTIONS_NAME)} (per-image top-1)")
    if result.matrix.gap_cdf is not None:
        result.matrix.gap_cdf.to_parquet(out / "gap_cdf.parquet", index=False)
        print(f"wrote {out / 'gap_cdf.parquet'} (GAP activation quantiles)")
    return 0


def _device(name: str | None) -> str | None:
    """--device, checked before any data is read."""
    if name is None:
        return None
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a torch device; use cpu or cuda (cuda:N for GPU N)") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: torch finds {torch.cuda.device_count()} CUDA GPU(s) here; use --device "
                         "cpu, or leave --device unset to use a GPU when there is one")
    return name


def _check_server(args) -> None:
    """An unreachable tracking server fails here in about a second, before torch, Ray and MLflow load
    (each command checks its store again, fully, before it uses it)."""
    from records.store import check_server
    from jobspec import resolve_tracking_uri

    check_server(resolve_tracking_uri(args.tracking_uri))


def _run(args) -> int:
    from jobspec import load_suite
    from orchestrator.cluster.suite import RunOptions, run_suite

    suite = load_suite(args.suite, args.set, smoke=args.smoke)
    if args.dry_run:
        print(suite.table())
        if suite.smoke_note:
            print(suite.smoke_note)
        if any(job.config.data.dataset == "imagefolder" for job in suite.jobs):  # else no torch import (5 s)
            from orchestrator.data.loaders import check_suite_data
            for root, classes in check_suite_data(suite.jobs).items():  # a bad data.root: DatasetError, exit 2
                print(f"data {root}: train/ and val/ hold the same {len(classes)} classes")
        return 0
    if suite.smoke_note:
        print(suite.smoke_note)
    _check_server(args)
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
    from orchestrator.cluster.suite import RunOptions

    suite = load_suite(args.suite, args.set, smoke=args.smoke)
    _check_server(args)
    from orchestrator.cluster.evaluate_only import evaluate_suite  # MLflow, torch: seconds
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

    suite = load_suite(args.suite, args.set, smoke=args.smoke)
    _check_server(args)
    from orchestrator.cluster.status import suite_status  # MLflow, torch: seconds
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
    parser = ArgumentParser(prog="resolab", description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="on an error, show its traceback, not one line")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("describe", help="parameters and MAdds of a method's model (RS-Nets Table 2 style)")
    p.add_argument("--backbone", required=True, choices=list(BACKBONES), help="network")
    p.add_argument("--method", default="rsnet", choices=list(METHODS), help="training method (default rsnet)")
    p.add_argument("--resolutions", type=whole_number(1), nargs="+", default=[224, 192, 160, 128, 96],
                   metavar="PX", help="input sizes in pixels (default 224 192 160 128 96)")
    p.add_argument("--num-classes", type=whole_number(1), default=1000, help="classifier outputs (default 1000)")
    p.add_argument("--bn", default="private", choices=BN_CHOICES,
                   help="batch norm per resolution (private) or one for all (shared)")
    p.add_argument("--convs", default="meta", choices=["meta", "private"], help="san only")
    p.add_argument("--meta-hidden", type=whole_number(0), default=0, help="san only: hidden units of the meta net")
    p.add_argument("--small-input", action="store_true", help="3x3 stride-1 stem, no max-pool (16-64 px images)")
    p.add_argument("--weight-bits", type=int, default=32, help="bits of quantized conv weights (32: full precision)")
    p.add_argument("--act-bits", type=int, default=32, help="bits of quantized activations, preact_* only (32: none)")
    p.add_argument("--json", action="store_true", help="print JSON")
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

    p = sub.add_parser("status", help="jobs done / running / interrupted / failed / pending of a suite",
                       description=STATUS_STATES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _suite_arguments(p)
    p.set_defaults(func=_status)
    from orchestrator.cli.deploy import add_subcommands  # import-reference, export, pick, evaluate-model
    add_subcommands(sub)
    # --debug after the command too; SUPPRESS: where it is not given there, the top-level value stays.
    for p in sub.choices.values():
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="on an error, show its traceback, not one line")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("resolab: interrupted; what finished is kept. Run the same command again to go on from there.",
              file=sys.stderr)
        return 130
    except Exception as exc:
        reason = None if args.debug else user_error(exc)
        if reason is None:
            raise
        print(f"resolab: {reason}", file=sys.stderr)
        return 2


def user_error(exc: Exception) -> str | None:
    """The reason for an error the user can fix, in one line; None for any other error (a bug, whose
    traceback is shown). Checked in this order so that an early error (a config typo, an unreachable
    server) is reported without waiting for torch or MLflow to load."""
    from records.store import TrackingUnavailable
    from jobspec import ConfigError

    if isinstance(exc, ConfigError):
        reason = f"config error: {exc}"
    elif isinstance(exc, (TrackingUnavailable, UsageError)):
        reason = str(exc)
    else:
        from mlflow.exceptions import MlflowException
        from orchestrator.data.loaders import DatasetError
        from orchestrator.deploy.model_file import ModelFileError

        if isinstance(exc, (DatasetError, ModelFileError)):
            reason = str(exc)
        elif isinstance(exc, MlflowException):
            reason = f"MLflow: {exc.message}"
        else:
            return None
    return " ".join(line.strip() for line in reason.splitlines() if line.strip())


if __name__ == "__main__":
    sys.exit(main())
