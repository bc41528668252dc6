"""Writing many metrics or params to one MLflow run without tripping ``log_batch``'s limits."""
from __future__ import annotations

# MLflow's per-call limits of log_batch.
MAX_METRICS_PER_CALL = 1000
MAX_PARAMS_PER_CALL = 100


def log_batched(client, run_id: str, metrics=(), params=()) -> None:
    """Metrics and params in as few ``log_batch`` calls as MLflow allows: each call is one write
    transaction, and SQLite writers are slow."""
    metrics, params = list(metrics), list(params)
    for i in range(0, len(metrics), MAX_METRICS_PER_CALL):
        client.log_batch(run_id, metrics=metrics[i:i + MAX_METRICS_PER_CALL])
    for i in range(0, len(params), MAX_PARAMS_PER_CALL):
        client.log_batch(run_id, params=params[i:i + MAX_PARAMS_PER_CALL])
