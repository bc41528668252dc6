"""SOURCE of ``export`` / ``pick``: a model file, a job checkpoint, or the MLflow run id of a finished job.

A run id gives the model (its final checkpoint, from the run's ``resolab.checkpoint_dir`` tag — a path
or an object-store URI — or where ``--storage`` keeps it; or, for a run ``resolab evaluate-model`` made, the model file it names) and
its accuracy matrix. A file gives the model alone.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from orchestrator.engine import checkpoint as ckpt
from orchestrator.deploy.model_file import LoadedModel, ModelFileError, load_model
from records import names
from records import storage as files

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class Source:
    model: LoadedModel
    matrix: object | None  # analysis.matrix.Matrix, when the source is a run that recorded one
    run_id: str | None = None


def resolve_source(text: str, tracking_uri: str | None = None, storage: str | None = None,
                   need_matrix: bool = False) -> Source:
    path = Path(text)
    if path.exists() or not RUN_ID.match(text):
        if need_matrix and path.exists():
            raise ModelFileError(f"{text} is a file: it has no accuracy matrix to pick from. Evaluate it with "
                                 "`resolab evaluate-model FILE --data ROOT` and pass the run id that prints")
        return Source(load_model(path), None)
    return _from_run(text, tracking_uri, storage)


def _from_run(run_id: str, tracking_uri: str | None, storage: str | None) -> Source:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from analysis.report import read_matrix
    from orchestrator.cluster.evaluate_only import checkpoint_dirs
    from records.layout import default_storage
    from records.store import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ModelFileError(f"no MLflow run {run_id} in {uri}; check the id, or pass the --tracking-uri "
                             "the run was recorded in") from None
    tags = run.data.tags
    if tags.get(names.KIND) != names.JOB_RUN:
        raise ModelFileError(f"run {run_id} is not a resolab job run (a suite's parent run?); pass one of its jobs' runs")
    if run.info.status != "FINISHED":
        raise ModelFileError(f"run {run_id} ({tags.get(names.JOB)}) is {run.info.status}, not FINISHED: its model "
                             "is not final. Finish it with `resolab run`, or pass a finished run")
    source = {"run_id": run_id, "job": tags.get(names.JOB), "suite": tags.get(names.SUITE)}
    if tags.get(names.MODEL_FILE):
        model = load_model(Path(tags[names.MODEL_FILE]), source)
    else:
        # The run's own checkpoint lookup (tag, else --storage), without listing the whole store.
        dirs = checkpoint_dirs(run, storage or default_storage())
        found = next((d for d in dirs if ckpt.final_checkpoint(d) is not None), None)
        if found is None:
            places = ", ".join(dirs) or "nowhere recorded"
            raise ModelFileError(f"run {run_id} finished, but no final checkpoint is left at {places}; pass the "
                                 "--storage it ran with")
        with files.local_folder(found, [ckpt.CHECKPOINT_FILE]) as folder:  # a copy, from an object store
            model = load_model(folder / ckpt.CHECKPOINT_FILE, source)
    try:
        matrix = read_matrix(client, run_id)
    except (MlflowException, OSError):
        matrix = None
    return Source(model, matrix, run_id)
