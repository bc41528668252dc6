"""Trained models out and in: model files, reference import, export, pick, evaluate-model."""
