"""The on-disk cache of tokenised data: ``<cache dir>/<key>.npz`` holding ``tokens``, ``values`` and ``groups``.

The key (:func:`cache_key`) is a SHA-256 of the format version, the way the data is read and the bytes of its
files, so the same data read the same way has the same key wherever the files are; it is also the data's
``content_hash``. A cache file that is missing or unreadable is simply re-made, and one that cannot be written only
warns.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

from crmlab.runners.sources import DataSource

__all__ = ["FORMAT_VERSION", "cache_key", "default_cache_dir", "read_cache", "write_cache"]

FORMAT_VERSION = 1
"""Bump when the tokenisation or the cache layout changes: every cached token file is then re-made."""


def default_cache_dir() -> Path:
    """The token cache: ``$CRMLAB_CACHE`` if set, else ``$XDG_CACHE_HOME/crmlab/tokens`` (``~/.cache/...``)."""
    env = os.environ.get("CRMLAB_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "crmlab" / "tokens"


def cache_key(source: DataSource, length: int, raw: bytes, values_raw: bytes | None) -> str:
    """The cache key and content hash of a data source read at a model length.

    Args:
        source: how the data is read; its file names are left out of the key.
        length: the model input length.
        raw: the data file's bytes as stored.
        values_raw: the FASTA ``values_file``'s bytes as stored, or None.

    Returns:
        SHA-256 hex digest of the format version, the source's fields but its file names, the length and the file
        bytes (and values file): the same data read the same way has the same key wherever the files are (an
        exported study).
    """
    h = hashlib.sha256(f"crmlab-tokens-v{FORMAT_VERSION}\n".encode())
    # ``too_long: truncate`` (the behaviour before the setting existed) keeps the keys of earlier caches and runs
    names = {"path", "values_file"}
    fields = source.model_dump(mode="json", exclude=names | {"too_long"} if source.too_long == "truncate" else names)
    h.update(json.dumps({"source": fields, "length": length}, sort_keys=True).encode())
    for blob in (raw, values_raw):
        if blob is not None:
            h.update(b"\n" + len(blob).to_bytes(8, "little"))
            h.update(blob)
    return h.hexdigest()


def read_cache(path: Path, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """Cached arrays, or None if absent or unreadable (then it is simply re-made).

    Args:
        path: the cache file.
        length: the model input length the tokens must have.

    Returns:
        Tokens ``uint8`` ``(n, length)``, values ``float32`` ``(n,)`` and groups ``(n,)`` or None; None when the
        file is missing, unreadable or holds arrays of other types or shapes.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            tokens, values = z["tokens"], z["values"]
            groups = z["groups"] if "groups" in z.files else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    n = tokens.shape[0] if tokens.ndim == 2 else -1
    if tokens.dtype != np.uint8 or tokens.shape != (n, length) or values.shape != (n,) or values.dtype != np.float32:
        return None
    return tokens, values, groups


def write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as an ``.npz`` atomically (a temporary file in the same folder, then ``os.replace``).

    Args:
        path: the cache file.
        arrays: ``tokens``, ``values`` and, when there are groups, ``groups``.

    A failure only warns: the data is then tokenised again next time.
    """
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem[:16]}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except OSError as e:
        warnings.warn(f"crmlab: cannot write the token cache {path}: {e}", RuntimeWarning, stacklevel=3)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
