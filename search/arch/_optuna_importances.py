"""Parameter importances of an Optuna study (fANOVA over its complete trials)."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

__all__ = ["importances"]


def importances(study: optuna.Study) -> dict[str, float]:
    """fANOVA importances over the complete trials (parameters present in all of them) for the first objective, or
    ``{}``."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(complete) < 2 or len({t.values[0] for t in complete}) < 2:
        return {}
    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    try:
        return dict(
            optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), target=target
            )
        )
    except (ValueError, RuntimeError):
        return {}
