"""Data readers and caches, recipes, the training runner, evaluation, prediction, explanation, MLflow tracking."""

__all__ = []
