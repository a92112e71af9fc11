"""The old home of the MLflow pyfunc model class, kept because models logged before the sub-package layout pickled
their class by this path (``crmlab.runners.mlflow_model.SequenceModel``): MLflow loads them through it. New models
name the package, ``crmlab.runners.inference.SequenceModel``; nothing in crmlab imports this module."""

from crmlab.runners.inference import SequenceModel

__all__ = ["SequenceModel"]
