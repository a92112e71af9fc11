"""Ablation and search studies (issues 4, 5)."""
