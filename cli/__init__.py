"""crmlab: the command line on top of ``registry``, ``blocks``, ``runners`` and ``search``."""

from importlib import metadata

try:
    __version__ = metadata.version("crmlab")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
