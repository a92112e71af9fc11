"""Ablation studies (runs, statistics, reports) and architecture search (Optuna, KerasTuner)."""

__all__ = []
