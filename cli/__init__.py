"""crmlab: architecture search and ablation for sequence-to-expression models.

The package root (source folder ``cli/``) holds the version and the ``crmlab`` command (:mod:`crmlab.cli`); the
layers below it are :mod:`crmlab.registry` <- :mod:`crmlab.blocks` <- :mod:`crmlab.runners` <- :mod:`crmlab.search`.
"""

from importlib import metadata

__all__ = ["__version__"]

try:
    __version__ = metadata.version("crmlab")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
