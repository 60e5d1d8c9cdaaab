"""Where Ray Tune keeps a sweep: storage URIs, the run to resume, a cut searcher state, the local results folder."""

import pickle
from pathlib import Path

from ray.tune.search.hyperopt import HyperOptSearch

from raysweep import space
from raysweep.storage import latest_run, local_results_dir, repair_searcher_state, storage_uri
from raysweep.sweep import loguniform


def test_a_local_storage_becomes_an_absolute_folder_per_sweep(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage_uri("results", "quickstart") == str(tmp_path / "results" / "quickstart")
    assert storage_uri("~/runs", "s") == str(Path.home() / "runs" / "s")


def test_a_uri_keeps_its_query_at_the_end():
    query = "?endpoint_override=127.0.0.1:9000&scheme=http"
    assert storage_uri(f"s3://bucket/sweeps/{query}", "cifar") == f"s3://bucket/sweeps/cifar{query}"
    assert storage_uri("s3://bucket", "cifar") == "s3://bucket/cifar"


def test_the_latest_run_is_the_newest_folder_tune_can_restore(tmp_path):
    sweep = tmp_path / "quickstart"
    for name, restorable in [("2026-01-01_10-00-00", True), ("2026-01-02_10-00-00", True),
                             ("2026-01-03_10-00-00", False)]:  # the newest has no tuner.pkl: Tune never saved it
        (sweep / name).mkdir(parents=True)
        if restorable:
            (sweep / name / "tuner.pkl").write_bytes(b"state")
    (sweep / "notes.txt").write_text("a file, not a run")
    assert latest_run(str(sweep)) == "2026-01-02_10-00-00"
    assert latest_run(str(tmp_path / "never_run")) is None


def fresh_searcher() -> HyperOptSearch:
    return HyperOptSearch(space=space.to_hyperopt({"lr": loguniform(1e-3, 1e-1)}), metric="val_acc", mode="max",
                          random_state_seed=0)


def test_an_empty_searcher_state_is_replaced_by_a_fresh_one_with_a_warning(tmp_path):
    (tmp_path / "searcher-state-2026-01-01_10-00-00.pkl").write_bytes(b"old, readable")  # not the newest: untouched
    cut = tmp_path / "searcher-state-2026-01-02_10-00-00.pkl"
    cut.write_bytes(b"")  # what a driver killed mid-copy leaves
    warning = repair_searcher_state(str(tmp_path), fresh_searcher())
    assert warning is not None and cut.name in warning and "fresh searcher" in warning
    restored = fresh_searcher()
    restored.restore(str(cut))  # Tune's own restore now reads it
    assert isinstance(pickle.loads(cut.read_bytes()), dict)
    assert (tmp_path / "searcher-state-2026-01-01_10-00-00.pkl").read_bytes() == b"old, readable"


def test_a_readable_searcher_state_is_left_alone(tmp_path):
    saved = tmp_path / "searcher-state-2026-01-01_10-00-00.pkl"
    fresh_searcher().save(str(saved))
    before = saved.read_bytes()
    assert repair_searcher_state(str(tmp_path), fresh_searcher()) is None
    assert saved.read_bytes() == before
    assert repair_searcher_state("s3://bucket/sweep/run", fresh_searcher()) is None  # S3 never holds a cut object


def test_results_live_in_the_run_folder_locally_and_under_results_for_remote_storage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert local_results_dir(str(tmp_path / "st" / "s" / "run1"), "s") == tmp_path / "st" / "s" / "run1"
    remote = local_results_dir("s3://bucket/sweeps/s/run1?endpoint_override=h:1", "s")
    assert remote == tmp_path / "results" / "s" / "run1"
    assert local_results_dir("bucket/sweeps/s/run2", "s") == tmp_path / "results" / "s" / "run2"  # Tune's remote form
