"""MLflow tracking: one client per run tree that logs parameters, metrics, artifacts and logged models, failing fast
when the server is gone, and the parent run that each invocation of a study's command reopens."""

from crmlab.registry import lazy_exports

__all__ = ["Tracker", "default_tracking_uri", "flatten", "git_commit", "open_parent_run"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Tracker": "_tracker",
        "default_tracking_uri": "_tracker",
        "flatten": "_tracker",
        "git_commit": "_tracker",
        "open_parent_run": "_tracker",
    },
)
