"""What both halves of search share: the Optuna RDB storage (SQLite by default, PostgreSQL across machines)."""

from crmlab.registry import lazy_exports

__all__ = ["Heartbeat", "check_storage_url", "default_storage", "open_storage", "redact"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Heartbeat": "_rdb",
        "check_storage_url": "_rdb",
        "default_storage": "_rdb",
        "open_storage": "_rdb",
        "redact": "_rdb",
    },
)
