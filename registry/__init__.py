"""Spec parsing, templates, patching and validation. Pure Python: nothing here imports Keras."""

__all__ = []
