"""The quickstart over several seeds: the headline numbers as mean ± std, and whether the papers'
qualitative findings hold in the mean.

    python bench/quickstart_seeds.py                 # seeds 0 1 2: runs the suite, then reports
    python bench/quickstart_seeds.py --report-only   # report the runs already in the store
    python bench/quickstart_seeds.py --json          # the last line is one JSON object
    RESOLAB_HOME=/tmp/try python bench/quickstart_seeds.py --config my_quickstart.yaml
                                                     # a candidate quickstart, in a store of its own

It runs ``experiments/quickstart.yaml``'s job (or ``--config``'s) as its own suite (``quickstart_seeds``), crossed with
``train.seed``, plus a parallel model with shared BN for the BN finding; finished jobs are reused as in
any suite, so a rerun only reports. The findings checked, on the means over seeds:
  - each I-Net falls off below its training resolution, and the smallest one far above it (the corner of
    SAN Table 1; nearer above, the papers' I-Nets gain: see ``findings``);
  - RS-Net and SAN are at least as good as the I-Net at every training resolution;
  - private BN beats shared BN (parallel training) at the smallest training resolution;
  - no cell of the headline table reaches 99.5 % (the task leaves headroom).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from records import names  # noqa: E402
from records.store import resolve_tracking_uri  # noqa: E402

SUITE = "quickstart_seeds"
MODELS = {  # row label -> the case that trains it
    "I-Nets": {"method.name": "individual"},
    "parallel": {"method.name": "parallel", "method.bn": "private"},
    "parallel, shared BN": {"method.name": "parallel", "method.bn": "shared"},
    "RS-Net": {"method.name": "rsnet"},
    "SAN": {"method.name": "san"},
}
HEADROOM = 99.5


QUICKSTART = REPO / "experiments" / "quickstart.yaml"


def write_suite(folder: Path, seeds: list[int], config: Path = QUICKSTART) -> Path:
    quickstart = yaml.safe_load(config.read_text())
    cases = {label.replace(", ", "_").replace(" ", "_").replace("-", "_").lower(): case for label, case in MODELS.items()}
    path = folder / f"{SUITE}.yaml"
    path.write_text(yaml.safe_dump({"name": SUITE, "description": "the quickstart over seeds (bench/quickstart_seeds.py)",
                                    "job": quickstart["job"], "cases": cases, "grid": {"train.seed": seeds}}))
    return path


def diagonal(uri: str) -> dict[str, dict[int, list[float]]]:
    """label -> training resolution -> top-1 at that resolution, one value per seed."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(SUITE)
    if experiment is None:
        return {}
    runs = client.search_runs([experiment.experiment_id], names.FINISHED_JOB_FILTER,
                              max_results=1000)
    out: dict[str, dict[int, list[float]]] = {}
    for run in runs:
        p, m = run.data.params, run.data.metrics
        for label, case in MODELS.items():
            if all(p.get(k, v) == v for k, v in case.items() if k != "method.bn" or p["method.name"] != "individual"):
                for r in json.loads(p["data.resolutions"]):
                    if f"acc1/train{r}_test{r}" in m:
                        out.setdefault(label, {}).setdefault(r, []).append(m[f"acc1/train{r}_test{r}"])
                if label == "I-Nets":  # each I-Net's row: its accuracy at the other training resolutions
                    r = json.loads(p["data.resolutions"])[0]
                    for key, value in m.items():
                        if key.startswith(f"acc1/train{r}_test"):
                            out.setdefault(f"I-Net {r}", {}).setdefault(int(key.rsplit("test", 1)[1]), []).append(value)
                break
    return out


def mean(values) -> float:
    return statistics.fmean(values)


def findings(cells: dict, resolutions: list[int]) -> list[tuple[str, bool]]:
    checks = []
    for r in resolutions:
        row = cells.get(f"I-Net {r}", {})
        below = [t for t in resolutions if t < r and t in row]
        if below:
            checks.append((f"I-Net {r} falls off below {r} (tested at {', '.join(map(str, below))})",
                           r in row and all(mean(row[r]) > mean(row[t]) for t in below)))
    # Above the training resolution the papers' I-Nets first gain and fall off only far away: SAN
    # Table 1's ResNet-18 I-128 has 66.36 at 128 but 69.06 at 192 (RandomResizedCrop training shows
    # objects larger than the test resize does: the train/test discrepancy of FixRes, Touvron et al.
    # 2019), while I-96 has 62.56 at 96, 58.87 at 224 and 54.68 at 256. So the finding checked above is
    # that corner: the smallest I-Net tested at the largest test resolution.
    small = min(resolutions)
    row = cells.get(f"I-Net {small}", {})
    far = max(row, default=small)
    if far > small:
        checks.append((f"I-Net {small} falls off far above {small} (tested at {far}, {far / small:.2f}x; "
                       f"SAN Table 1: I-96 at 224)", small in row and mean(row[small]) > mean(row[far])))
    for label in ("RS-Net", "SAN"):
        for r in resolutions:
            ok = r in cells.get(label, {}) and r in cells.get("I-Nets", {}) and \
                mean(cells[label][r]) >= mean(cells["I-Nets"][r])
            checks.append((f"{label} >= I-Net at {r}", ok))
    private, shared = cells.get("parallel", {}).get(small), cells.get("parallel, shared BN", {}).get(small)
    checks.append((f"private BN > shared BN at {small}", bool(private and shared and mean(private) > mean(shared))))
    top = max((mean(v) for label in MODELS for v in cells.get(label, {}).values()), default=100.0)
    checks.append((f"no headline cell at or above {HEADROOM} % (highest {top:.1f})", top < HEADROOM))
    return checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--config", type=Path, default=QUICKSTART,
                        help="a suite file whose job: section is the quickstart to try (default: %(default)s)")
    parser.add_argument("--report-only", action="store_true", help="report the runs already recorded")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    uri = resolve_tracking_uri(args.tracking_uri)
    wall = None
    if not args.report_only:
        with tempfile.TemporaryDirectory() as tmp:
            command = [sys.executable, "-m", "orchestrator.cli.main", "run", str(write_suite(Path(tmp), args.seeds, args.config))]
            if args.tracking_uri:
                command += ["--tracking-uri", args.tracking_uri]
            start = time.monotonic()
            code = subprocess.run(command, cwd=REPO).returncode
            wall = time.monotonic() - start
            if code != 0:
                return code
    cells = diagonal(uri)
    resolutions = sorted(cells.get("I-Nets", {}), reverse=True)
    if not resolutions:
        print(f"no finished {SUITE} runs in {uri}; run without --report-only", file=sys.stderr)
        return 1
    print(f"{SUITE}: top-1 (%) at each training resolution, mean ± std over seeds"
          + (f"; suite wall time {wall / 60:.1f} min" if wall else ""))
    print("| model | " + " | ".join(f"{r}×{r}" for r in resolutions) + " |")
    print("|---|" + "---:|" * len(resolutions))
    for label in MODELS:
        row = cells.get(label, {})
        print(f"| {label} | " + " | ".join(
            f"{mean(row[r]):.1f} ± {statistics.pstdev(row[r]):.1f} (n={len(row[r])})" if r in row else "–"
            for r in resolutions) + " |")
    checks = findings(cells, resolutions)
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    if args.json:
        print(json.dumps({"wall_s": wall, "resolutions": resolutions,
                          "mean": {label: {r: mean(v) for r, v in cells.get(label, {}).items()} for label in MODELS},
                          "std": {label: {r: statistics.pstdev(v) for r, v in cells.get(label, {}).items()} for label in MODELS},
                          "findings": {text: ok for text, ok in checks}}))
    return 0 if all(ok for _, ok in checks) else 3


if __name__ == "__main__":
    sys.exit(main())
