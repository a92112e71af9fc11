"""Parameter importances of an Optuna study (fANOVA over its complete trials)."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

__all__ = ["importances"]


def importances(study: optuna.Study) -> dict[str, float]:
    """fANOVA importances over the complete trials (parameters present in all of them), or ``{}``."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(complete) < 2 or len({t.value for t in complete}) < 2:
        return {}
    try:
        return dict(
            optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
            )
        )
    except (ValueError, RuntimeError):
        return {}
