"""A model file evaluated like a trained job (``resolab evaluate-model``).

The model file's config says how to build the net; ``--data`` (an ImageFolder root) and ``--set``
overrides (``eval.test_resolutions``, ``eval.calibrate``, ...) say what to evaluate it on; without
``--data`` it is the data the model's config names, except for a model imported from a paper's code,
which needs ``--data`` (its config's data is only a default). The matrix comes from the same evaluator
as every job's (``orchestrator.engine.job.evaluate_job``: every inference mode of the method, the same data
builders), and goes to MLflow the same way (``analysis.report.log_matrix``)
as a FINISHED job run in the experiment ``--suite`` (default "imported"), tagged ``resolab.model_file``
so that ``resolab export RUN_ID`` / ``resolab pick RUN_ID`` find the model again.

Its config hash tag is the model file's digest, not a config hash: an imported model was trained by
code resolab does not know, so it must never stand in for a resolab job with the same config (reuse
and evaluation-only match runs by hash).
"""
from __future__ import annotations

import hashlib
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Callable

from jobspec import ConfigError, JobConfig, flatten, nest, param_value, parse_overrides
from jobspec.tree import deep_merge
from orchestrator.deploy.model_file import LoadedModel, ModelFileError, load_model
from records import names
from records.store import resolve_tracking_uri

IMPORTED_SUITE = "imported"
logger = logging.getLogger(__name__)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


# What --set may change: the evaluation and the data it reads. The rest (model, method, training, the
# training resolutions and the classes) is the trained model's, fixed by its weights.
SETTABLE = ("eval", "data", "resources", "tag")
FIXED_KEYS = ("data.resolutions", "data.num_classes")
TAKES = "a resolab model file (resolab import-reference writes one) or a job's checkpoint.pt"


def evaluation_config(config: JobConfig, data_root: str | None, overrides: list[str]) -> JobConfig:
    """The model's config with ``--data`` and ``--set`` applied, validated as a suite's job is."""
    tree = config.to_dict()
    changes = dict(parse_overrides(overrides))
    for key in changes:
        if key.split(".")[0] not in SETTABLE or any(key == k or key.startswith(k + ".") for k in FIXED_KEYS):
            raise ConfigError(f"--set {key}: evaluate-model evaluates the model as it was trained, so its model, "
                              "method, train, data.resolutions and data.num_classes settings are fixed; --set takes "
                              "eval.*, data.* (the data to evaluate on) and resources.*")
    if data_root is not None:
        changes.update({"data.dataset": "imagefolder", "data.root": data_root})
    return JobConfig.parse(deep_merge(tree, nest(changes))).validate()


def data_in_words(loaded: LoadedModel, cfg: JobConfig, model_path: Path, data_root: str | None,
                  overrides: list[str]) -> str:
    """Which data the evaluation reads, checked (layout, classes); a ModelFileError where it would be a
    guess: a model imported from a paper's code was trained on data resolab cannot know, so without
    --data its config's default (the built-in synthetic data) would give chance-level numbers."""
    data = cfg.data
    chosen = data_root is not None or any(k in ("data", "data.dataset") for k in parse_overrides(overrides))
    kind = str(loaded.source.get("kind", ""))
    if not chosen and kind.startswith("reference-"):
        raise ModelFileError(f"{model_path} holds weights imported from the {kind[len('reference-'):]} reference code, "
                             "trained on data resolab cannot know: give --data ROOT, the ImageFolder (train/ and val/, "
                             "e.g. ImageNet) to evaluate it on")
    if data.dataset == "synthetic":
        return (f"the built-in synthetic data the model's config names ({data.num_classes or 10} classes); "
                "give --data ROOT to evaluate on an ImageFolder instead")
    from orchestrator.data.loaders import DatasetError, check_imagefolder_layout

    root = Path(data.root).expanduser()
    try:
        classes = check_imagefolder_layout(root)
    except DatasetError as exc:
        problem = str(exc).split("\nFix:")[0]
        fix = ("give --data a folder with that layout" if data_root is not None else
               "give --data ROOT, a folder with that layout (this one is data.root of the model's config)")
        raise ModelFileError(f"{problem} Fix: {fix}") from None
    if len(classes) != loaded.num_classes:
        raise ModelFileError(f"{root}/train holds {len(classes)} classes, the model has {loaded.num_classes} outputs: "
                             "give --data the dataset it was trained on")
    given = "--data" if data_root is not None else "data.root of the model's config"
    return f"the ImageFolder {root} ({given}, {len(classes)} classes)"


def progress(log, max_batches: int | None = None, interval: float = 10.0):
    """Wraps the validation loader: a line with the images done, the time taken and the time left,
    every ``interval`` seconds and at the end. A batch counts as done when the evaluator asks for the
    next one; ``max_batches`` (eval.max_batches) is where the evaluator stops."""
    def wrap(loader):
        total = len(loader.dataset)
        if max_batches is not None:
            total = min(total, max_batches * loader.batch_size)
        start = last = time.monotonic()
        seen = 0
        for batch in loader:
            yield batch
            seen += len(batch[1])
            now = time.monotonic()
            if seen >= total:
                log(f"  {seen}/{total} images, {now - start:.0f} s")
            elif now - last >= interval:
                left = (now - start) / seen * (total - seen)
                log(f"  {seen}/{total} images ({100 * seen / total:.0f}%), {now - start:.0f} s, "
                    f"about {left:.0f} s left")
                last = now
    return wrap


def evaluate_model(model_path: Path, data_root: str | None, overrides: list[str], tracking_uri: str | None,
                   device: str | None, suite: str = IMPORTED_SUITE, log: Callable[[str], None] | None = None):
    """Evaluate; record; return (matrix, run id). ``log`` takes the progress lines (default: this module's logger)."""
    log = log or logger.info
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    from analysis.matrix import matrix_cells
    from records.batch import log_batched
    from analysis.report import log_matrix
    from backbones.complexity import count_madds
    from orchestrator.engine.job import cpu_threads, evaluate_job
    from orchestrator.engine.loop import LocalRuntime, TrainedJob
    from records.runs import job_run_tags, suite_experiment
    from records.store import check_store, store_creation_lock

    model_path = Path(model_path).resolve()
    loaded = load_model(model_path, expected=TAKES)
    cfg = evaluation_config(loaded.config, data_root, overrides)
    log(f"data: {data_in_words(loaded, cfg, model_path, data_root, overrides)}")
    uri = resolve_tracking_uri(tracking_uri)
    check_store(uri)
    runtime = LocalRuntime(device=device, log=log)
    net = loaded.net.to(runtime.device)
    modes = loaded.method.eval_modes(cfg.eval.calibrate)
    cells = matrix_cells(net, modes, cfg.test_resolutions())
    calibrated = sum(1 for _, calibrate in cells.values() if calibrate)
    log(f"evaluating {len(cells)} cells ({', '.join(m.name for m in modes)}) at test resolutions "
        f"{' '.join(map(str, cfg.test_resolutions()))} on {runtime.device}"
        + (f"; first BN recalibration for {calibrated} cells, {cfg.eval.calib_batches} training batches each"
           if calibrated else ""))
    start = time.monotonic()
    with cpu_threads(cfg.resources.cpus_per_worker):
        matrix = evaluate_job(cfg, TrainedJob(net, loaded.method, loaded.num_classes), runtime,
                              progress(log, cfg.eval.max_batches))
    log(f"evaluated in {time.monotonic() - start:.0f} s")
    madds = {int(r): int(count_madds(net, int(r))) for r in cfg.test_resolutions()}

    with store_creation_lock(uri):
        client = MlflowClient(uri)
        experiment_id = suite_experiment(client, suite, uri)
    identity = f"model-{file_digest(model_path)}"  # config and training hash: see the module docstring
    tags = {**job_run_tags(suite, model_path.stem, model_path.stem, cfg, identity, identity, "imported"),
            names.MODEL_FILE: str(model_path),
            names.DESCRIPTION: (f"Evaluation of the model file {model_path} (source: {loaded.source}); "
                                f"nothing trained. Command: {' '.join(shlex.quote(a) for a in sys.argv)}")}
    run_id = client.create_run(experiment_id, run_name=model_path.stem, tags=tags).info.run_id
    try:
        log_batched(client, run_id, params=[Param(k, param_value(v)) for k, v in flatten(cfg).items()])
        log_matrix(client, run_id, matrix, madds, title=model_path.stem)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return matrix, run_id
