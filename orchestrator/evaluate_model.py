"""A model file evaluated like a trained job (``resolab evaluate-model``).

The model file's config says how to build the net; ``--data`` (an ImageFolder root) and ``--set``
overrides (``eval.test_resolutions``, ``eval.calibrate``, ...) say what to evaluate it on. The matrix
comes from the same evaluator as every job's (``orchestrator.job.evaluate_job``: every inference mode
of the method, the same data builders), and goes to MLflow the same way (``analysis.report.log_matrix``)
as a FINISHED job run in the experiment ``--suite`` (default "imported"), tagged ``resolab.model_file``
so that ``resolab export RUN_ID`` / ``resolab pick RUN_ID`` find the model again.

Its config hash tag is the model file's digest, not a config hash: an imported model was trained by
code resolab does not know, so it must never stand in for a resolab job with the same config (reuse
and evaluation-only match runs by hash).
"""
from __future__ import annotations

import hashlib
import shlex
import sys
from pathlib import Path

from jobspec import JobConfig, flatten, nest, param_value, parse_overrides, resolve_tracking_uri
from jobspec.tree import deep_merge
from orchestrator.model_file import load_model
from orchestrator.model_source import MODEL_FILE_TAG

IMPORTED_SUITE = "imported"


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def evaluation_config(config: JobConfig, data_root: str | None, overrides: list[str]) -> JobConfig:
    tree = config.to_dict()
    changes = dict(parse_overrides(overrides))
    if data_root is not None:
        changes.update({"data.dataset": "imagefolder", "data.root": data_root})
    return JobConfig.parse(deep_merge(tree, nest(changes)))


def evaluate_model(model_path: Path, data_root: str | None, overrides: list[str], tracking_uri: str | None,
                   device: str | None, suite: str = IMPORTED_SUITE, log=print):
    """Evaluate; record; return (matrix, run id)."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    from analysis.mlflow_batch import log_batched
    from analysis.report import log_matrix
    from backbones.complexity import count_madds
    from orchestrator.job import cpu_threads, evaluate_job
    from orchestrator.loop import LocalRuntime, TrainedJob
    from orchestrator.mlflow_sink import artifact_location, check_tracking
    from orchestrator.tracking import store_creation_lock

    model_path = Path(model_path).resolve()
    loaded = load_model(model_path)
    cfg = evaluation_config(loaded.config, data_root, overrides)
    uri = resolve_tracking_uri(tracking_uri)
    check_tracking(uri)
    runtime = LocalRuntime(device=device, log=log)
    net = loaded.net.to(runtime.device)
    with cpu_threads(cfg.resources.cpus_per_worker):
        matrix = evaluate_job(cfg, TrainedJob(net, loaded.method, loaded.num_classes), runtime)
    madds = {int(r): int(count_madds(net, int(r))) for r in cfg.test_resolutions()}

    with store_creation_lock(uri):
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(suite)
        experiment_id = experiment.experiment_id if experiment else \
            client.create_experiment(suite, artifact_location=artifact_location(uri))
    digest = file_digest(model_path)
    tags = {"resolab.kind": "job", "resolab.suite": suite, "resolab.job": model_path.stem,
            "resolab.group": model_path.stem, "resolab.method": cfg.method.name,
            "resolab.backbone": cfg.model.backbone, "resolab.config_hash": f"model-{digest}",
            "resolab.training_hash": f"model-{digest}", "resolab.code_version": "imported",
            "resolab.train_resolutions": ",".join(str(r) for r in cfg.data.resolutions),
            "resolab.seed": str(cfg.train.seed), "resolab.tag": cfg.tag, MODEL_FILE_TAG: str(model_path),
            "mlflow.note.content": (f"Evaluation of the model file {model_path} (source: {loaded.source}); "
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
