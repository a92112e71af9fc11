"""The on-disk cache of tokenised data: a folder ``<cache dir>/<key>/`` of ``tokens.npy``, ``values.npy`` and, when
there are groups, ``groups.npy``, read memory-mapped so that every process on a machine shares one copy.

The key (:func:`cache_key`) is a SHA-256 of the format version, the way the data is read and the bytes of its
files, so the same data read the same way has the same key wherever the files are; it is also the data's
``content_hash``. Hashing a large file takes a while, so :func:`data_key` remembers each key in a small index under
``<cache dir>/index/``, filed by a cheap key (the file's resolved path, size, modification time and a hash of its
first and last MiB): a file seen before is never read whole again. A cache folder that is missing or unreadable is
simply re-made (files of the older ``<key>.npz`` layout are left alone); :class:`CacheWriter` streams tokens to a
temporary folder renamed into place when complete, so readers never see half a cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np

from crmlab.registry import SpecError
from crmlab.runners.data._sources import DataSource

__all__ = [
    "FORMAT_VERSION",
    "CacheWriteError",
    "CacheWriter",
    "cache_key",
    "data_key",
    "default_cache_dir",
    "read_cache",
]

FORMAT_VERSION = 1
"""Bump when the tokenisation changes: every key, so every content hash and cached token file, then changes."""

_BLOCK = 1 << 20
_DIGEST = re.compile(r"[0-9a-f]{64}")


def default_cache_dir() -> Path:
    """The token cache: ``$CRMLAB_CACHE`` if set, else ``$XDG_CACHE_HOME/crmlab/tokens`` (``~/.cache/...``)."""
    env = os.environ.get("CRMLAB_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "crmlab" / "tokens"


def _source_fields(source: DataSource, length: int) -> bytes:
    # ``too_long: truncate`` (the behaviour before the setting existed) keeps the keys of earlier caches and runs
    names = {"path", "values_file"}
    fields = source.model_dump(mode="json", exclude=names | {"too_long"} if source.too_long == "truncate" else names)
    return json.dumps({"source": fields, "length": length}, sort_keys=True).encode()


def cache_key(source: DataSource, length: int, data: BinaryIO, values: BinaryIO | None) -> str:
    """The cache key and content hash of a data source read at a model length, reading each file once in blocks.

    Args:
        source: how the data is read; its file names are left out of the key.
        length: the model input length.
        data: the data file, opened for reading bytes (as stored: a gzip file is hashed compressed).
        values: the FASTA ``values_file``, opened the same way, or None.

    Returns:
        SHA-256 hex digest of the format version, the source's fields but its file names, the length and the file
        bytes (each preceded by its size): the same data read the same way has the same key wherever the files are
        (an exported study).

    Raises:
        SpecError: a file changed size while it was read.
    """
    h = hashlib.sha256(f"crmlab-tokens-v{FORMAT_VERSION}\n".encode())
    h.update(_source_fields(source, length))
    for fh in (data, values):
        if fh is None:
            continue
        size = os.fstat(fh.fileno()).st_size
        h.update(b"\n" + size.to_bytes(8, "little"))
        fh.seek(0)
        read = 0
        while block := fh.read(_BLOCK):
            h.update(block)
            read += len(block)
        if read != size:
            raise SpecError(fh.name, "", f"the file changed while it was read ({size} bytes, then {read})")
    return h.hexdigest()


def _cheap_key(source: DataSource, length: int, files: list[BinaryIO]) -> str:
    """A key from each file's resolved path, size, modification time and first and last MiB (a few reads)."""
    h = hashlib.sha256(b"crmlab-tokens-index-v1\n" + _source_fields(source, length))
    for fh in files:
        st = os.fstat(fh.fileno())
        fh.seek(0)
        head = fh.read(_BLOCK)
        fh.seek(max(st.st_size - _BLOCK, len(head)))
        tail = fh.read(_BLOCK)
        stamp = [str(Path(fh.name).resolve()), st.st_size, st.st_mtime_ns]
        h.update(json.dumps(stamp).encode() + hashlib.sha256(head + tail).digest())
    return h.hexdigest()


def data_key(source: DataSource, length: int, data: BinaryIO, values: BinaryIO | None, cache_dir: Path) -> str:
    """:func:`cache_key`, looked up in the index of ``cache_dir`` when the files are unchanged since last time.

    Args:
        source: how the data is read.
        length: the model input length.
        data: the data file, opened for reading bytes.
        values: the FASTA ``values_file``, opened the same way, or None.
        cache_dir: the token cache, whose ``index/`` folder remembers keys.

    Returns:
        The key :func:`cache_key` gives. The files are read whole only when their path, size, modification time or
        first or last MiB are new; the key is then remembered (silently not, when the index cannot be written).
    """
    files = [data] if values is None else [data, values]
    entry = cache_dir / "index" / _cheap_key(source, length, files)
    try:
        known = entry.read_text().strip()
    except (OSError, UnicodeDecodeError):
        known = ""
    if _DIGEST.fullmatch(known):
        return known
    digest = cache_key(source, length, data, values)
    tmp: str | None = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            fh.write(digest + "\n")
        os.replace(tmp, entry)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return digest


def read_cache(folder: Path, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """The cached arrays, memory-mapped read-only, or None if absent or unreadable (then it is simply re-made).

    Args:
        folder: the cache folder (``<cache dir>/<key>``).
        length: the model input length the tokens must have.

    Returns:
        Tokens ``uint8`` ``(n, length)``, values ``float32`` ``(n,)`` and groups ``(n,)`` (``int64`` or ``str``)
        or None; None when a file is missing, unreadable or holds arrays of other types or shapes.
    """
    try:
        tokens = np.load(folder / "tokens.npy", mmap_mode="r")
        values = np.load(folder / "values.npy", mmap_mode="r")
        groups = np.load(folder / "groups.npy", mmap_mode="r") if (folder / "groups.npy").is_file() else None
    except (OSError, ValueError, EOFError):
        return None
    n = tokens.shape[0] if tokens.ndim == 2 else -1
    if tokens.dtype != np.uint8 or tokens.shape != (n, length) or values.shape != (n,) or values.dtype != np.float32:
        return None
    if groups is not None and (groups.shape != (n,) or groups.dtype.kind not in "iU"):
        return None
    return np.asarray(tokens), np.asarray(values), None if groups is None else np.asarray(groups)


class CacheWriteError(Exception):
    """The token cache could not be written (the message says where and why); the data can be read without it."""


def _npy_header(shape: tuple[int, int]) -> bytes:
    """The ``.npy`` header of a ``uint8`` array of ``shape``; numpy pads it so its size does not depend on rows."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buf.getvalue()


class CacheWriter:
    """Writes one cache folder, token rows appended chunk by chunk so that they are never all in memory.

    Use it as a context manager: leaving the block without :meth:`finish` (an error in the data) removes the
    temporary folder. Without a folder it keeps the chunks in memory instead (for when the cache cannot be written).

    Args:
        folder: the cache folder to make (``<cache dir>/<key>``), or None.
        length: the model input length (columns of the tokens).

    Raises:
        CacheWriteError: any failure to write, from any method.
    """

    def __init__(self, folder: Path | None, length: int) -> None:
        self.folder, self.length, self.rows = folder, length, 0
        self._chunks: list[np.ndarray] = []
        self._tmp: Path | None = None
        self._tokens: BinaryIO | None = None
        if folder is not None:
            try:
                folder.parent.mkdir(parents=True, exist_ok=True)
                self._tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name[:16]}.", suffix=".tmp"))
                self._tokens = (self._tmp / "tokens.npy").open("wb")
                self._tokens.write(_npy_header((0, length)))
            except OSError as e:
                self._cleanup()
                raise CacheWriteError(f"{folder}: {e}") from None

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        if self._tokens is not None:
            self._tokens.close()
            self._tokens = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def append(self, tokens: np.ndarray) -> None:
        """Add token rows ``uint8`` ``(rows, length)`` after those already written."""
        if self._tokens is None:
            self._chunks.append(tokens)
        else:
            try:
                self._tokens.write(np.ascontiguousarray(tokens, dtype=np.uint8).data)
            except OSError as e:
                raise CacheWriteError(f"{self.folder}: {e}") from None
        self.rows += len(tokens)

    def finish(self, values: np.ndarray, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Complete the cache with the values ``float32`` ``(rows,)`` and groups ``(rows,)`` or None.

        Returns:
            Tokens ``(rows, length)``, values and groups: memory-mapped from the cache folder, once it is in place
            (made by this writer or, when another process finished the same folder first, by that one).
        """
        if self._tokens is None or self._tmp is None or self.folder is None:
            tokens = np.concatenate(self._chunks) if self._chunks else np.zeros((0, self.length), np.uint8)
            return tokens, values, groups
        try:
            self._tokens.seek(0)
            self._tokens.write(_npy_header((self.rows, self.length)))
            self._tokens.close()
            self._tokens = None
            np.save(self._tmp / "values.npy", values)
            if groups is not None:
                np.save(self._tmp / "groups.npy", groups)
            if read_cache(self.folder, self.length) is None:  # a sound folder (another process's) is kept
                shutil.rmtree(self.folder, ignore_errors=True)  # a broken one is replaced
                try:
                    os.replace(self._tmp, self.folder)
                    self._tmp = None
                except OSError:
                    if read_cache(self.folder, self.length) is None:  # not another process finishing first
                        raise
        except OSError as e:
            raise CacheWriteError(f"{self.folder}: {e}") from None
        finally:
            self._cleanup()
        arrays = read_cache(self.folder, self.length)
        if arrays is None:
            raise CacheWriteError(f"{self.folder}: the written cache cannot be read back")
        return arrays
