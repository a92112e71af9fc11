"""``backend: keras_tuner``: the same space searched by a KerasTuner oracle (RandomSearch, BayesianOptimization,
Hyperband), each trial trained by the same runner as with Optuna.

The space is declared up front as KerasTuner ``HyperParameters`` with nested ``conditional_scope``s, so an inactive
parameter is neither sampled nor reported. Hyperband's budget (``tuner/epochs``) is the number of epochs of the
recipe's last stage: a trial stops there, and the trial that continues it resumes the same run from its checkpoint.
Choices of mixed types (e.g. ``[null, 2, 4]``) are declared as their YAML text and decoded per trial.

A paused trial's run keeps its state until the tuner is done: when the search ends, the runs of paused trials that no
later trial finished have their state dropped (they will not be continued).

Tuner state lives in ``<runs-dir>/_keras_tuner/<name>-<key>``; running the command again resumes it (``crmlab runs
--prune`` deletes it once the search has finished; the same command then starts the tuner afresh, reusing the
finished runs by their keys). Distributed
tuning uses KerasTuner's own chief/worker mode: start one process with ``KERASTUNER_TUNER_ID=chief``, and any
number with ``KERASTUNER_TUNER_ID=tuner0``, ``tuner1``, ..., all with ``KERASTUNER_ORACLE_IP`` and
``KERASTUNER_ORACLE_PORT`` naming the chief, on a shared ``--runs-dir`` (the chief serves the oracle over gRPC).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import keras_tuner
import optuna
from keras_tuner.engine.base_tuner import BaseTuner

from crmlab.registry import BoolParam, ChoiceParam, CrmlabError, FloatParam, IntParam, Param, Space
from crmlab.runners.rundir import Owner, discard_unfinished, record_study
from crmlab.search.arch._leaderboard import TrialRow
from crmlab.search.arch._optuna_importances import importances as optuna_importances
from crmlab.search.arch._optuna_space import distributions
from crmlab.search.arch._study import CANONICAL, Search
from crmlab.search.arch._trial import TrialOutcome, open_parent_run, run_trial, train_canonical
from crmlab.search.arch.backends._base import SearchBackend, SearchOptions, SearchRun, finish_search

__all__ = [
    "CrmlabTuner",
    "KerasTunerBackend",
    "declare",
    "importances",
    "make_oracle",
    "run_keras_tuner",
    "trial_rows",
    "values_of",
]

_PLAIN = (bool, int, float, str)


def _encoded(param: Param) -> dict[Any, Any] | None:
    """For a choice KerasTuner cannot hold as is (mixed types, null): text -> value; else ``None``."""
    if not isinstance(param.spec, ChoiceParam):
        return None
    kinds = {type(v) for v in param.spec.values}
    if len(kinds) == 1 and next(iter(kinds)) in _PLAIN:
        return None
    return {json.dumps(v): v for v in param.spec.values}


def declare(space: Space) -> keras_tuner.HyperParameters:
    """The space as KerasTuner hyperparameters (conditions as nested conditional scopes)."""
    hp = keras_tuner.HyperParameters()
    for p in space:
        with contextlib.ExitStack() as scopes:
            for c in p.conditions:
                parent = space[c.key]
                allowed = [v for v in parent.finite_values or [] if c.holds(v)]
                codes = _encoded(parent)
                if codes is not None:
                    allowed = [k for k, v in codes.items() if v in allowed]
                scopes.enter_context(hp.conditional_scope(c.key, allowed))
            s = p.spec
            codes = _encoded(p)
            if isinstance(s, ChoiceParam):
                hp.Choice(p.key, list(codes) if codes is not None else s.values, ordered=False)
            elif isinstance(s, BoolParam):
                hp.Boolean(p.key)
            elif isinstance(s, IntParam):
                if s.log:
                    hp.Int(p.key, s.low, s.high, sampling="log")
                else:
                    hp.Int(p.key, s.low, s.high, step=s.step)
            elif isinstance(s, FloatParam):
                hp.Float(p.key, s.low, s.high, step=s.step, sampling="log" if s.log else "linear")
    return hp


def values_of(hp: keras_tuner.HyperParameters, space: Space) -> dict[str, Any]:
    """The active sampled values of a trial, decoded."""
    values: dict[str, Any] = {}
    for p in space:
        if p.key in hp.values and hp.is_active(p.key) and space.is_active(p, values):
            value = hp.get(p.key)
            codes = _encoded(p)
            values[p.key] = codes[value] if codes is not None else value
    return values


class CrmlabTuner(BaseTuner):
    """A KerasTuner tuner whose trial is a crmlab run (no ``HyperModel``: the space is declared on the oracle)."""

    def __init__(
        self,
        oracle: keras_tuner.Oracle,
        search: Search,
        runs_dir: Path,
        tracking_uri: str | None,
        parent: str | None,
        canonical: dict[str, Any],
        progress: Any,
    ) -> None:
        self.crmlab_search, self.runs_dir, self.tracking_uri, self.parent = search, runs_dir, tracking_uri, parent
        self.canonical, self.progress = canonical, progress
        self.stdout = sys.stdout  # KerasTuner's own printing is silenced around search(); progress lines are not
        directory = runs_dir / "_keras_tuner"
        super().__init__(oracle, directory=str(directory), project_name=f"{search.doc.name}-{search.key[:12]}")
        self.outcomes_file = Path(self.project_dir) / "crmlab_outcomes.json"
        self.outcomes: dict[str, dict[str, Any]] = (
            json.loads(self.outcomes_file.read_text()) if self.outcomes_file.exists() else {}
        )

    def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> float:
        hp = trial.hyperparameters
        values = values_of(hp, self.crmlab_search.space)
        budget = hp.values.get("tuner/epochs")
        outcome = run_trial(
            self.crmlab_search,
            values,
            self.runs_dir,
            label=f"trial {trial.trial_id}",
            tracking_uri=self.tracking_uri,
            parent_id=self.parent,
            budget=int(budget) if budget is not None else None,
            canonical=self.canonical["tests"],
        )
        self._record(trial.trial_id, values, outcome)
        if outcome.state == "failed":
            raise keras_tuner.errors.FailedTrialError(outcome.reason)
        if outcome.value is None:
            raise keras_tuner.errors.FailedTrialError("no epoch of the last stage was trained")
        return outcome.value

    def _record(self, trial_id: str, values: dict[str, Any], outcome: TrialOutcome) -> None:
        self.outcomes[trial_id] = {
            "state": "pruned" if outcome.state == "paused" else outcome.state,
            "value": outcome.value,
            "params": values,
            "epochs": len(outcome.curve),
            "deltas": outcome.deltas,
            "reason": outcome.reason,
            "run_key": outcome.run_key,
        }
        tmp = self.outcomes_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.outcomes))
        os.replace(tmp, self.outcomes_file)
        if self.progress is not None:
            value = f"{outcome.value:.4f}" if outcome.value is not None else "-"
            with contextlib.redirect_stdout(self.stdout):
                self.progress(
                    f"trial {trial_id}: {self.outcomes[trial_id]['state']} {self.crmlab_search.metric}={value} {values}"
                )

    def save_model(self, trial_id: str, model: Any, step: int = 0) -> None:
        """Models are kept by the runner (run directories), not by the tuner."""

    def load_model(self, trial: Any) -> Any:
        raise NotImplementedError("load a trial's model from its run directory (crmlab predict RUN_DIR)")


def make_oracle(search: Search) -> keras_tuner.Oracle:
    """The ``keras_tuner.tuner`` oracle over the declared space (Hyperband's budget: epochs of the last stage)."""
    o, doc = search.doc.keras_tuner, search.doc
    objective = keras_tuner.Objective(search.metric, "min" if search.direction == "minimize" else "max")
    common = {
        "objective": objective,
        "seed": doc.seed,
        "hyperparameters": declare(search.space),
        "allow_new_entries": False,
        "tune_new_entries": False,
        "max_consecutive_failed_trials": doc.trials + 1,
    }
    if o.tuner == "hyperband":
        last = search.canonical[1].stages[-1]
        epochs = search.canonical[1].stage_epochs(last)
        return keras_tuner.oracles.HyperbandOracle(
            max_epochs=epochs, factor=o.factor, hyperband_iterations=o.hyperband_iterations, **common
        )
    if o.tuner == "bayesian":
        return keras_tuner.oracles.BayesianOptimizationOracle(max_trials=doc.trials, **common)
    return keras_tuner.oracles.RandomSearchOracle(max_trials=doc.trials, **common)


def _state_file(search: Search, runs_dir: Path) -> Path:
    return runs_dir / "_studies" / f"{search.doc.name}-{search.key}.kt.json"


def run_keras_tuner(
    search: Search,
    runs_dir: Path,
    tracking_uri: str | None = None,
    mlflow: bool = True,
    progress: Any = print,
) -> tuple[CrmlabTuner, list[TrialRow], dict[str, Any]]:
    """Canonical first, then the tuner's trials; returns the tuner, leaderboard rows and canonical's record."""
    state_file = _state_file(search, runs_dir)
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    tracker, parent = None, None
    if mlflow:
        tracker, parent = open_parent_run(search, runs_dir, tracking_uri, state.get("parent_run_id"))
        state["parent_run_id"] = parent
    owner = Owner(search.doc.name, "search", search.key)
    record_study(runs_dir, owner, "start")
    try:
        if "canonical" not in state:
            result, value = train_canonical(search, runs_dir, tracking_uri, parent)
            state["canonical"] = {"value": value, "tests": result.test_metrics, "run_key": result.run_key}
        state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, state_file)
        canonical = state["canonical"]
        progress(f"{CANONICAL}: {search.metric} = {canonical['value']:.4f}")
        tuner = CrmlabTuner(make_oracle(search), search, runs_dir, tracking_uri, parent, canonical, progress)
        with _quiet_tuner():
            tuner.search()
    except BaseException:
        if tracker is not None:
            tracker.end("KILLED")
        raise
    for outcome in tuner.outcomes.values():  # paused trials the tuner did not continue: never resumed now
        if outcome["state"] == "pruned" and outcome.get("run_key"):
            discard_unfinished(runs_dir / outcome["run_key"])
    rows = finish_search(search, runs_dir, tracker, lambda: trial_rows(tuner), canonical)
    return tuner, rows, canonical


@contextlib.contextmanager
def _quiet_tuner() -> Any:
    """KerasTuner prints a search-space summary and per-trial tables; crmlab prints its own progress lines."""
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        yield


def trial_rows(tuner: CrmlabTuner) -> list[TrialRow]:
    """The leaderboard rows of the tuner's recorded trials, in trial order."""
    return [
        TrialRow(int(trial_id), o["state"], o["value"], o["params"], o["epochs"], o["deltas"], o["reason"])
        for trial_id, o in sorted(tuner.outcomes.items(), key=lambda kv: int(kv[0]))
    ]


def importances(search: Search, rows: list[TrialRow]) -> dict[str, float]:
    """fANOVA importances of the complete trials, computed by Optuna on an in-memory copy."""
    done = [r for r in rows if r.state == "complete" and r.value is not None]
    if len(done) < 2 or len({r.value for r in done}) < 2:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=search.direction)
    dists = distributions(search.space)
    for r in done:
        study.add_trial(
            optuna.create_trial(params=r.params, distributions={k: dists[k] for k in r.params}, value=r.value)
        )
    return optuna_importances(study)


class KerasTunerBackend(SearchBackend):
    """``backend: keras_tuner``: a KerasTuner oracle; distributed by KerasTuner's own chief/worker variables."""

    def check_options(self, options: SearchOptions) -> None:
        """``--storage`` and ``--jobs`` are Optuna's."""
        if options.storage or options.workers != 1:
            flag = "--storage" if options.storage else "--jobs"
            raise CrmlabError(
                f"{flag}: only with backend: optuna (a keras_tuner search stays on one machine: its chief holds the "
                "oracle in memory, with no lease a worker on another machine could be recovered by)"
            )

    def connect(self, search: Search, runs_dir: Path, options: SearchOptions) -> None:
        """The tuner's state is files in the runs folder: nothing to reach."""

    def run(self, search: Search, runs_dir: Path, options: SearchOptions) -> SearchRun:
        """:func:`run_keras_tuner` with the options."""
        tuner, rows, canonical = run_keras_tuner(
            search, runs_dir, options.tracking_uri, options.mlflow, options.progress
        )
        return SearchRun(rows, canonical, tuner)

    def importances(self, search: Search, run: SearchRun) -> dict[str, float]:
        """fANOVA importances of the complete trials (:func:`importances`)."""
        return importances(search, run.rows)
