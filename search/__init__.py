"""Studies over many runs, in two halves that never import each other: :mod:`~crmlab.search.ablation` (does each
variant help, hurt or make no difference against canonical?) and :mod:`~crmlab.search.arch` (architecture search with
Optuna or KerasTuner), over what both share, :mod:`~crmlab.search.storage`."""

__all__: list[str] = []
