"""Ray: one job as a Tune trial, the suite driver and its MLflow side, status."""
