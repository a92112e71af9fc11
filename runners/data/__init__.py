"""Measured data in: source files read, tokenised and cached once, split by group, and gathered row by row without
copies."""

from crmlab.registry import lazy_exports

__all__ = [
    "ALPHABET",
    "DataSource",
    "Dataset",
    "RowView",
    "SequenceTable",
    "default_cache_dir",
    "encode",
    "load",
    "read_sequences",
    "split",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ALPHABET": "_tokens",
        "DataSource": "_sources",
        "Dataset": "_datasets",
        "RowView": "_rowview",
        "SequenceTable": "_sequences",
        "default_cache_dir": "_token_cache",
        "encode": "_tokens",
        "load": "_datasets",
        "read_sequences": "_sequences",
        "split": "_datasets",
    },
)
