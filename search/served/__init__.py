"""Studies served to workers on many machines through a shared Optuna RDB storage (PostgreSQL): the driver that
enqueues an ablation's runs look by look, the ``crmlab worker`` loop that claims and trains them, and the record and
checks that keep remote workers from corrupting or losing results."""

from crmlab.registry import lazy_exports

__all__ = [
    "DATABASE_PATIENCE_S",
    "KIND_ATTR",
    "MARKER",
    "STUDY_PREFIX",
    "QueueDriver",
    "QueueRow",
    "Record",
    "ablation_run_key",
    "cancel_study",
    "check_record",
    "code_fingerprint",
    "drain_study",
    "queue_rows",
    "queue_text",
    "retrying",
    "runs_marker",
    "search_publisher",
    "serve",
    "serve_slots",
    "start_workers",
    "stop_workers",
    "study_name",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DATABASE_PATIENCE_S": "_retry",
        "KIND_ATTR": "_record",
        "MARKER": "_record",
        "STUDY_PREFIX": "_record",
        "runs_marker": "_record",
        "QueueDriver": "_driver",
        "QueueRow": "_queue",
        "cancel_study": "_queue",
        "drain_study": "_queue",
        "queue_rows": "_queue",
        "queue_text": "_queue",
        "Record": "_record",
        "ablation_run_key": "_driver",
        "check_record": "_record",
        "code_fingerprint": "_record",
        "retrying": "_retry",
        "search_publisher": "_search",
        "serve": "_worker",
        "serve_slots": "_worker",
        "start_workers": "_worker",
        "stop_workers": "_worker",
        "study_name": "_driver",
    },
)
