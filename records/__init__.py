"""What a job leaves behind and where: MLflow names, runs and stores; reuse of finished runs."""
