"""The papers' tables and figures, rebuilt from the MLflow job runs: one registry (``registry.TABLES``) of pure builders."""
