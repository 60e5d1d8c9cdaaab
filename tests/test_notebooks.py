"""The study notebooks run top to bottom against the MLflow record of a real smoke sweep, so they never rot.

Each notebook gets its own sweep (`python -m raysweep.run sweeps/<sweep>.py --smoke` on the real data in
../shared/data), run once per module, and is executed by nbclient in a fresh kernel with MLFLOW_TRACKING_URI and
RAYSWEEP_EXPERIMENT pointing at that record. The conclusions it prints are checked against the record itself. Each
record also gets a hand-made diverged trial (val_loss = inf), which the notebook must show as inf.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import nbformat
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from nbclient import NotebookClient

from tests.sweep_runs import REPO, SHARED_DATA, run_sweep, trials_csv

NOTEBOOKS = REPO / "notebooks"
# notebook -> (the sweep it studies, how many figures it draws)
STUDIES = {
    "optimizers": ("mnist_optimizers", 3),
    "regularizers": ("cifar_regularizers", 3),
    "elastic_net_search": ("cifar_elastic", 2),
}
# The comparisons (a list of trials) run with two seeds each: their notebooks show the seeds' table.
REPEATED = {"optimizers", "regularizers"}
DIVERGED = "diverged lr=10"  # the run name of the trial each study's record gets added (see add_diverged_trial)


def execute(notebook: Path, *, experiment: str, tracking_uri: str, cwd: Path) -> nbformat.NotebookNode:
    """Run every cell in a fresh python3 kernel; raises CellExecutionError at the first failing cell."""
    nb = nbformat.read(notebook, as_version=4)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "RAYSWEEP_EXPERIMENT": experiment}
    env.pop("MPLBACKEND", None)  # the kernel's inline backend is what turns figures into image/png outputs
    env.pop("RAYSWEEP_SWEEP_RUN_ID", None)
    client = NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(cwd)}})
    client.execute(env=env)
    return nb


def printed(nb: nbformat.NotebookNode) -> str:
    return "".join(out.get("text", "") for cell in nb.cells for out in cell.get("outputs", [])
                   if out.get("output_type") == "stream" and out.get("name") == "stdout")


def trial_runs(tracking_uri: str, experiment: str) -> list:
    client = MlflowClient(tracking_uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return client.search_runs([experiment_id], "tags.`raysweep.role` = 'trial'")


def add_diverged_trial(tracking_uri: str, experiment: str) -> None:
    """Add to the sweep run a trial like its first but whose one epoch ended with val_loss = inf.

    A smoke sweep does not diverge, and this is what the notebooks must read back right: MLflow's SQL store keeps
    the inf as the largest float, and report.collect turns it back into inf."""
    client = MlflowClient(tracking_uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    first = min(trial_runs(tracking_uri, experiment), key=lambda run: run.data.tags["raysweep.trial_id"])
    tags = {**{k: v for k, v in first.data.tags.items() if k.startswith("raysweep.") or k == "mlflow.parentRunId"},
            "raysweep.status": "diverged", "raysweep.trial_id": "~diverged"}  # "~" sorts it after every real trial
    run = client.create_run(experiment_id, run_name=DIVERGED, tags=tags)
    metrics = {"train_loss": 2.3, "val_loss": math.inf, "train_acc": 0.1, "val_acc": 0.1, "epoch_time_s": 1.0}
    params = {**first.data.params, "lr": "10.0"}
    client.log_batch(run.info.run_id, metrics=[Metric(key, value, 0, 1) for key, value in metrics.items()],
                     params=[Param(key, value) for key, value in params.items()])
    client.set_terminated(run.info.run_id, "FINISHED")


@pytest.fixture(scope="module", params=sorted(STUDIES))
def study(request, tmp_path_factory) -> dict:
    """A smoke sweep's record and its notebook executed against it."""
    name = request.param
    sweep, _ = STUDIES[name]
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: {sweep} needs the real MNIST / CIFAR-10 files")
    folder = tmp_path_factory.mktemp(sweep)
    repeats = ("--repeats", "2") if name in REPEATED else ()
    done = run_sweep(REPO / "sweeps" / f"{sweep}.py", folder, "--smoke", "--data-dir", str(SHARED_DATA), *repeats)
    # What tests/test_run.py checks of every smoke sweep, so this run can stand for that one.
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(trials_csv(folder, sweep)) == 2
    assert "best trial" in done.stdout
    uri = f"sqlite:///{folder}/mlflow.db"
    add_diverged_trial(uri, sweep)
    nb = execute(NOTEBOOKS / f"{name}.ipynb", experiment=sweep, tracking_uri=uri, cwd=folder)
    return {"name": name, "sweep": sweep, "uri": uri, "nb": nb, "text": printed(nb)}


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_notebooks_are_stored_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, f"{name}.ipynb has no code cells"
    assert all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_notebooks_read_the_record_through_the_package(name):
    """No notebook reads MLflow by itself: report.collect is the one reader, so its fixes (inf) reach them all."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    assert "report.collect(" in code
    assert not [call for call in ("search_runs", "get_metric_history", "MlflowClient") if call in code]


def test_notebook_runs_every_cell_and_draws_its_figures(study):
    code = [cell for cell in study["nb"].cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code)
    outputs = [out for cell in code for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    figures = sum("image/png" in out.get("data", {}) for out in outputs)
    assert figures == STUDIES[study["name"]][1]
    # It read the record it was pointed at, not a default store.
    runs = trial_runs(study["uri"], study["sweep"])
    assert f"{study['sweep']}: sweep run " in study["text"]
    assert f"{len(runs)} trial runs" in study["text"]


def test_notebook_conclusions_match_the_record(study):
    """The best trial a notebook names is the one the MLflow record says is best."""
    runs = trial_runs(study["uri"], study["sweep"])
    client = MlflowClient(study["uri"])
    best_val_acc = {run.info.run_name: max(m.value for m in client.get_metric_history(run.info.run_id, "val_acc"))
                    for run in runs}
    final_val_acc = {run.info.run_name: run.data.metrics["val_acc"] for run in runs}
    text = study["text"]
    if study["name"] == "elastic_net_search":
        best = max(best_val_acc, key=best_val_acc.get)
        assert f"Highest validation accuracy: {best} with {best_val_acc[best]:.4f}" in text
        stopped = sum(run.data.tags.get("raysweep.status") == "early_stopped" for run in runs)
        assert f"ASHA stopped {stopped} of {len(runs)} trials early" in text
        return
    line = next(line for line in text.splitlines() if line.startswith("Highest final validation accuracy: "))
    top = max(final_val_acc.values())
    leaders = [name for name, acc in final_val_acc.items() if acc == top]
    assert all(name in line for name in leaders) and f"({top:.4f})" in line
    if study["name"] == "regularizers":
        # The smoke record has one epoch: the unregularized trial's least validation loss is at epoch 1 of 1.
        assert "Unregularized (none): validation loss was least at epoch 1 of 1" in text


def test_notebook_reads_a_diverged_trials_infinity_back_as_infinity(study):
    """The trial table it shows holds the inf val_loss of the diverged trial, not NaN and not the largest float."""
    shown = [out["data"]["text/plain"] for cell in study["nb"].cells for out in cell.get("outputs", [])
             if out.get("output_type") == "execute_result" and "text/plain" in out.get("data", {})]
    table = next(text for text in shown if "final_val_loss" in text)
    # pandas wraps a wide table into blocks of columns; each block repeats the trial's name at its row's start.
    row = [value for line in table.splitlines() if line.startswith(DIVERGED)
           for value in line[len(DIVERGED):].split()]
    assert "inf" in row


def test_a_comparison_notebook_shows_the_seeds_table_its_sweep_run_holds(study):
    from raysweep import report, stats

    record = report.collect(experiment_name=study["sweep"], tracking_uri=study["uri"])
    compared = report.comparison(record, tracking_uri=study["uri"])
    if study["name"] not in REPEATED:
        assert compared is None  # a search logs no comparison table
        assert "Seeds: mean and 95% confidence interval" not in "".join(c.source for c in study["nb"].cells)
        return
    assert list(compared.best_val_acc_n) == [2, 2]  # both configurations, two seeds each
    assert stats.format_table(compared, width=40) in study["text"]
