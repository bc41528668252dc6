"""What a job leaves behind and where: MLflow names, stores and runs, the storage layout, whole-file writes, reuse."""
