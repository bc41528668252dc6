"""Rebuild the papers' tables and figures from the MLflow runs that ``resolab run`` recorded.

    python analysis/make_tables.py                      # every table whose suite has runs
    python analysis/make_tables.py rsnets_table2 --format latex --out tables/
    python analysis/make_tables.py quickstart --suite my_suite --no-log
    python analysis/make_tables.py rsnets_table2 --ci   # 95% bootstrap intervals (seeds, images) on the gains
    python analysis/make_tables.py --list

Reads FINISHED job runs (tag resolab.kind = job) of each table's suite (= MLflow experiment), newest
per config hash; prints Markdown (or LaTeX / CSV) on stdout; with --out writes one file per table
plus the PNG figures; unless --no-log, logs each table and figure under ``tables/`` of the suite's
newest parent run (tag resolab.kind = suite), or of a run named ``tables`` created for it.
"""
from __future__ import annotations

import argparse
import inspect
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from analysis.table_model import Table

if __name__ == "__main__" and __package__ in (None, ""):
    # Run as a script: import the project packages from the repository root, not from analysis/.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from jobspec.one_line_parser import ArgumentParser
from jobspec import PROJECT_ROOT, resolve_tracking_uri

# pandas, MLflow and the table builders (torch, matplotlib) are imported when a table is built, so
# that --list and --help answer at once.

JOB_FILTER = "tags.`resolab.kind` = 'job'"
QUICKSTART_COMMAND = "resolab run experiments/quickstart.yaml"
FORMATS = {"md": "md", "latex": "tex", "csv": "csv"}  # --format -> file extension (table_render.RENDERERS)
# Builders that read per-image predictions or other run artifacts declare these keywords; the others
# never see them.
ARTIFACT_OPTIONS = ("predictions", "ci", "gap_cdf")


@dataclass(frozen=True)
class TableSpec:
    name: str
    suites: tuple[str, ...]  # MLflow experiments it reads, in order of preference
    builder: str  # key of analysis.tables.BUILDERS: (runs frame, commands, digits=...) -> Table
    about: str

    def build(self, *args, **kwargs):
        from analysis.tables import BUILDERS
        builder = BUILDERS[self.builder]
        taken = inspect.signature(builder).parameters
        return builder(*args, **{k: v for k, v in kwargs.items() if k not in ARTIFACT_OPTIONS or k in taken})


TABLES = {spec.name: spec for spec in [
    TableSpec("san_table1", ("san_table1",), "san_table1", "I-Nets vs SAN matrices, proxy cells marked"),
    TableSpec("san_table2", ("san_table2",), "san_table2", "SAN ideal / ideal+BN calibration / proxy at new test resolutions"),
    TableSpec("san_table3", ("san_table3",), "san_table3", "SAN w/o scale distillation, and + shared BN"),
    TableSpec("san_table4", ("san_table4",), "san_table4", "privatized convs instead of the meta network"),
    TableSpec("san_table5", ("san_table5",), "san_table5", "accuracy drop of MLP 8 / 16 meta networks vs linear"),
    TableSpec("san_table6", ("san_table6",), "san_table6", "I-Nets vs SAN at large training resolutions"),
    TableSpec("san_table7", ("san_table7",), "san_table7", "SAN at its largest training resolution (+ FixRes runs)"),
    TableSpec("rsnets_table1", ("rsnets_table2",), "rsnets_table1", "share of images right at one resolution, wrong at another (per-image predictions)"),
    TableSpec("rsnets_table2", ("rsnets_table2",), "rsnets_table2", "I-Nets, I-max, Parallel, RS-Net: top-1/top-5, gains, MAdds, params"),
    TableSpec("rsnets_table3", ("rsnets_table3",), "rsnets_table3", "quantized I-Nets vs RS-Net (LQ-Nets W2/A32, W2/A2), storage bits and MB"),
    TableSpec("rsnets_table4", ("rsnets_table4",), "rsnets_table4", "MobileNetV2: adjusting width (I-Nets-w, published S/US) vs resolution (I-Nets-r, RS-Net)"),
    TableSpec("rsnets_table5", ("rsnets_table5",), "rsnets_table5", "MRED distillation variants vs full"),
    TableSpec("rsnets_table6", ("rsnets_table6",), "rsnets_table6", "multi/single resolution x single/multi crop (single-res single-crop = I-Nets)"),
    TableSpec("rsnets_fig3", ("rsnets_fig3",), "rsnets_fig3", "GAP activation CDFs under train vs test pre-processing"),
    TableSpec("rsnets_fig4", ("rsnets_fig4",), "rsnets_fig4", "shared vs private BN; RS-Net interpolated BN vs I-Nets"),
    TableSpec("rsnets_fig5", ("rsnets_fig5",), "rsnets_fig5", "parallel training on pairs and larger sets: top-1 change over each I-Net"),
    TableSpec("fig1", ("san_table1", "rsnets_table2", "rsnets_table3"), "fig1", "accuracy vs test resolution, and top-1 vs MAdds"),
    TableSpec("quickstart", ("quickstart",), "quickstart", "the quickstart suite: Table-2 layout + I-Nets/SAN matrices"),
]}


def _resample_count(text: str) -> int:
    """argparse type of --ci-resamples: a 95% percentile interval needs at least 100 resamples."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 100:
        raise argparse.ArgumentTypeError(f"expected at least 100 resamples for a 95% interval, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="make_tables.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
    return parser


# --------------------------------------------------------------------------------------------
# Reading MLflow


def store_is_empty(uri: str) -> bool:
    """A SQLite store that does not exist yet is empty; do not create it just to say so."""
    return uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists()


def fetch_runs(client: MlflowClient, suite: str, extra_filter: str | None = None) -> pd.DataFrame:
    """Job runs of one suite as the frame ``mlflow.search_runs`` returns, plus a ``suite`` column.
    (The client is used instead of ``mlflow.search_runs`` so the global tracking URI is left alone.)"""
    import pandas as pd

    experiment = client.get_experiment_by_name(suite)
    if experiment is None:
        return pd.DataFrame()
    query = JOB_FILTER + (f" and {extra_filter}" if extra_filter else "")
    records, token = [], None
    while True:
        page = client.search_runs([experiment.experiment_id], query, max_results=50000, page_token=token)
        records += [_run_record(run, suite) for run in page]
        token = page.token
        if not token:
            return pd.DataFrame.from_records(records)


def _run_record(run, suite: str) -> dict:
    record = {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id, "suite": suite,
              "status": run.info.status, "start_time": run.info.start_time or 0, "end_time": run.info.end_time}
    record.update({f"params.{k}": v for k, v in run.data.params.items()})
    record.update({f"tags.{k}": v for k, v in run.data.tags.items()})
    record.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
    return record


def suites_with_job_runs(client: MlflowClient) -> list[str]:
    names = []
    for experiment in client.search_experiments():
        if client.search_runs([experiment.experiment_id], JOB_FILTER, max_results=1):
            names.append(experiment.name)
    return names


def suite_file(suite: str) -> str:
    """The experiments/*.yaml whose ``name:`` is ``suite`` (relative to the project), else the convention."""
    import yaml

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


# --------------------------------------------------------------------------------------------
# Logging to the suite's parent run


def parent_run_id(client: MlflowClient, suite: str) -> str:
    """The suite's newest parent run that holds finished jobs (not a later invocation that finished
    none, failed, or had nothing to do); else the newest ``tables`` run made earlier; else a new one."""
    experiment = client.get_experiment_by_name(suite)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(suite)
    finished = client.search_runs([experiment_id], f"{JOB_FILTER} and attributes.status = 'FINISHED'",
                                  max_results=50000)
    holders = {run.data.tags.get("mlflow.parentRunId") for run in finished}
    parents = client.search_runs([experiment_id], "tags.`resolab.kind` = 'suite'", max_results=50000,
                                 order_by=["attributes.start_time DESC"])
    for run in parents:
        if run.info.run_id in holders:
            return run.info.run_id
    runs = client.search_runs([experiment_id], "tags.`resolab.kind` = 'tables'", max_results=1,
                              order_by=["attributes.start_time DESC"])
    if runs:
        return runs[0].info.run_id
    # Tagged "tables", not "suite": it is not an invocation of the suite, only a home for its tables.
    run = client.create_run(experiment_id, run_name="tables", tags={"resolab.kind": "tables", "resolab.suite": suite})
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def write_table_files(table: Table, folder: Path, formats=("md", "latex", "csv")) -> list[Path]:
    """The table in each format plus its figures as PNG (``<table>_<figure>.png``)."""
    from analysis import plots, table_render

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = folder / f"{table.name}.{FORMATS[fmt]}"
        path.write_text(table_render.render(table, fmt))
        written.append(path)
    for name, make_figure in table.all_figures().items():
        written.append(plots.save(make_figure(), folder / f"{table.name}_{name}.png"))
    return written


def log_table(client: MlflowClient, suite: str, table: Table) -> str:
    """Log the table's files under tables/ of the run ``parent_run_id`` picks; returns that run's id."""
    run_id = parent_run_id(client, suite)
    with tempfile.TemporaryDirectory() as tmp:
        write_table_files(table, Path(tmp))
        client.log_artifacts(run_id, tmp, artifact_path="tables")
    return run_id


# --------------------------------------------------------------------------------------------
# The command


def list_tables() -> str:
    """Every table and figure of both papers: the builder, the suite(s) it reads, what it shows."""
    from analysis.paper_items import ITEMS

    width = max(map(len, TABLES))
    lines, listed = [], set()
    for item in ITEMS:
        spec = TABLES.get(item.table)
        where = f"{item.paper} {item.item}"
        if spec is None:
            reason = item.why_not or "not built yet"
            lines.append(f"{where:<22}  {'-':<{width}}  {reason}")
            continue
        listed.add(spec.name)
        lines.append(f"{where:<22}  {spec.name:<{width}}  suite(s): {', '.join(spec.suites):<28}  {spec.about}")
    for spec in TABLES.values():
        if spec.name not in listed:
            lines.append(f"{'(resolab)':<22}  {spec.name:<{width}}  suite(s): {', '.join(spec.suites):<28}  {spec.about}")
    return "\n".join(lines)


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def _nothing_there(uri: str, client: MlflowClient | None) -> int:
    other = suites_with_job_runs(client) if client is not None else []
    if other:
        _say(f"No runs of the known tables' suites in {uri}; suites with job runs: {', '.join(other)}.\n"
             f"Render one with: python analysis/make_tables.py quickstart --suite {other[0]}")
    else:
        _say(f"No resolab job runs in {uri} yet. Fill it with:\n  {QUICKSTART_COMMAND}\n"
             "then run: python analysis/make_tables.py")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        print(list_tables())
        return 0
    unknown = [name for name in args.tables if name not in TABLES]
    if unknown:
        _say(f"make_tables: unknown table(s) {', '.join(unknown)}; choose from {', '.join(TABLES)} (--list says more)")
        return 2
    uri = resolve_tracking_uri(args.tracking_uri)
    if store_is_empty(uri):
        return _nothing_there(uri, None)
    from records.store import TrackingUnavailable, check_tracking

    try:
        check_tracking(uri)  # seconds, where MLflow's client retries an unreachable server for minutes
    except TrackingUnavailable as exc:
        _say(f"make_tables: {exc}")
        return 2
    if args.out:
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _say(f"make_tables: cannot create the --out folder {args.out} ({exc.strerror or exc}); choose another")
            return 2
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    try:
        return _make_tables(args, uri, client, SuiteRuns(client, args.filter))
    except MlflowException as exc:  # a bad --filter, an unreachable server: one line, not a traceback
        _say(f"make_tables: {getattr(exc, 'message', exc)}")
        return 2


class SuiteRuns:
    """Job runs per suite, fetched once per invocation."""

    def __init__(self, client, extra_filter: str | None):
        self.client, self.extra_filter, self.cache = client, extra_filter, {}

    def __call__(self, suite: str) -> pd.DataFrame:
        if suite not in self.cache:
            self.cache[suite] = fetch_runs(self.client, suite, self.extra_filter)
        return self.cache[suite]

    def has(self, suite: str) -> bool:
        return len(self(suite)) > 0


def _make_tables(args, uri: str, client, runs: SuiteRuns) -> int:
    def suites_of(spec: TableSpec) -> tuple[str, ...]:
        return (args.suite,) if args.suite else spec.suites

    from analysis.report import read_gap_cdf, read_predictions

    artifact_options = {"predictions": RunArtifact(client, read_predictions), "ci": _bootstrap(args),
                 "gap_cdf": RunArtifact(client, read_gap_cdf)}
    names = args.tables or [spec.name for spec in TABLES.values() if any(map(runs.has, suites_of(spec)))]
    if not names and args.suite and runs.has(args.suite):
        names = ["quickstart"]  # a suite of its own: the generic I-Nets vs methods overview
    if not names:
        return _nothing_there(uri, client)
    printed = 0
    for name in names:
        spec = TABLES[name]
        suites = [s for s in suites_of(spec) if runs.has(s)]
        if not suites:
            _say(f"{name}: no finished job runs in suite {' / '.join(suites_of(spec))} of {uri} — run: "
                 + " or ".join(run_command(s) for s in suites_of(spec)))
            continue
        table = _build(spec, [runs(s) for s in suites], [run_command(s) for s in suites_of(spec)], args.digits,
                       artifact_options)
        _emit(table, args.format, header=printed == 0)
        printed += 1
        if args.out:
            write_table_files(table, args.out, formats=(args.format,))
        if not args.no_log:
            run_id = log_table(client, suites[0], table)
            _say(f"{name}: logged under tables/ of run {run_id} (experiment {suites[0]})")
    return 0 if printed else 1


def _build(spec: TableSpec, frames: list, commands: list[str], digits: int | None, artifact_options: dict):
    import pandas as pd

    kwargs = {"digits": digits} if digits is not None else {}
    return spec.build(pd.concat(frames, ignore_index=True), commands, **kwargs, **artifact_options)


def _bootstrap(args):
    if not args.ci:
        return None
    from analysis.bootstrap import Bootstrap
    return Bootstrap(resamples=args.ci_resamples)


class RunArtifact:
    """One artifact of each run (``reader(client, run_id)``), downloaded once per invocation; None for a
    run without it."""

    def __init__(self, client, reader):
        self.client, self.reader, self.cache = client, reader, {}

    def __call__(self, run_id: str):
        if run_id not in self.cache:
            self.cache[run_id] = self.reader(self.client, run_id)
        return self.cache[run_id]


def _emit(table, fmt: str, header: bool) -> None:
    from analysis import table_render

    if fmt == "csv":  # keep stdout one valid CSV; the lines under the table go to stderr
        sys.stdout.write(table_render.to_csv(table, header=header))
        for line in table.notes:
            _say(f"{table.name}: {line}")
        return
    if not header:
        print()
    sys.stdout.write(table_render.render(table, fmt))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        _say("make_tables: interrupted")
        sys.exit(130)
