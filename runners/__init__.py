"""Everything that turns a study file into trained, evaluated and logged runs, in sub-packages by job.

In the order data flows: :mod:`~crmlab.runners.studyfile` (reading a study file), :mod:`~crmlab.runners.data`
(measured data in), :mod:`~crmlab.runners.training` (one run's loop), :mod:`~crmlab.runners.rundir` (what a run leaves
on disk), :mod:`~crmlab.runners.parallel` (where runs execute), :mod:`~crmlab.runners.inference` (using a trained
model), :mod:`~crmlab.runners.benchmark` (measuring speed) and :mod:`~crmlab.runners.tracking` (MLflow). Their import
order is declared in pyproject's ``[tool.importlinter]``. ``mlflow_model`` here only keeps an old class path alive.
"""

__all__: list[str] = []
