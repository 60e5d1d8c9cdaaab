"""The Ray Tune trainable outside a worker: checkpoints read back as plain tensors only, the device it reports, and
one configuration trained with several seeds in one trial."""

import pathlib
import pickle
import subprocess
import sys
import textwrap

import pytest
import ray
import torch
from ray import tune

from raysweep import data, trainable
from raysweep.config import TrialConfig
from raysweep.optim import OPTIMIZERS
from raysweep.seeds import seed_configs
from raysweep.train import run_trial
from raysweep.trainable import CHECKPOINT_FILE, SEED_METRICS, load_model, load_state
from tests.sweep_runs import REPO


@pytest.fixture(scope="module")
def synthetic():
    return data.load("synthetic", subset=600)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_every_optimizers_checkpoint_loads_as_plain_tensors(synthetic, tmp_path, optimizer):
    config = TrialConfig.from_dict({"optimizer": optimizer, "hidden": [8], "max_epochs": 1, "patience": 2})
    _, state = next(run_trial(config, synthetic))
    torch.save(state, tmp_path / CHECKPOINT_FILE)
    loaded = load_state(tmp_path, device="cpu")
    assert loaded["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    assert loaded["early_stopping"] == state["early_stopping"] and loaded["epoch"] == 1
    assert torch.equal(loaded["generator"], state["generator"])


class RunsCode:
    """Unpickling this creates `marker`: the kind of payload a tampered checkpoint carries."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


@pytest.fixture
def tampered(tmp_path):
    folder, marker = tmp_path / "checkpoint", tmp_path / "code_ran"
    folder.mkdir()
    torch.save({"model": RunsCode(marker), "epoch": 1}, folder / CHECKPOINT_FILE)
    return folder, marker


def test_a_checkpoint_that_carries_code_is_refused_and_the_code_never_runs(tampered):
    folder, marker = tampered
    with pytest.raises(pickle.UnpicklingError, match=r"state\.pt is not a plain tensor checkpoint") as caught:
        load_state(folder, device="cpu")
    assert str(folder / CHECKPOINT_FILE) in str(caught.value) and "\n" not in str(caught.value)
    assert not marker.exists()
    torch.load(folder / CHECKPOINT_FILE, weights_only=False)  # the control: an unsafe load does run it
    assert marker.exists()


@pytest.fixture
def fake_tune(monkeypatch):
    """The trainable outside a Ray worker: one assigned CPU, a chosen checkpoint, reports kept in a list."""

    class Context:
        def get_assigned_resources(self):
            return {"CPU": 1}

    reported, restore_from = [], []
    threads = torch.get_num_threads()
    monkeypatch.setattr(ray, "get_runtime_context", Context)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: restore_from[0] if restore_from else None)
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint: reported.append(metrics))
    yield reported, restore_from
    torch.set_num_threads(threads)


def test_a_trial_restored_from_a_tampered_checkpoint_fails_without_running_it(fake_tune, tampered, synthetic):
    reported, restore_from = fake_tune
    folder, marker = tampered
    restore_from.append(tune.Checkpoint.from_directory(str(folder)))
    with pytest.raises(pickle.UnpicklingError, match="not a plain tensor checkpoint"):
        trainable.trainable({"hidden": [8], "max_epochs": 1}, data=synthetic)
    assert not marker.exists() and reported == []


def test_the_trainable_reports_the_device_it_trained_on(fake_tune, synthetic):
    reported, _ = fake_tune
    trainable.trainable({"hidden": [8], "max_epochs": 2}, data=synthetic)
    assert [m["device"] for m in reported] == ["cpu", "cpu"]
    assert not any("gpu_mem_peak_mb" in m for m in reported)  # CUDA only


def test_a_systemexit_python_must_ignore_is_not_printed_and_every_other_error_is():
    # A fresh process: what Python prints for an exception it can only ignore (raised in a weakref callback, one of
    # the places Ray's SIGTERM handler lands when it stops a worker), without and with the trainable's hook.
    script = textwrap.dedent("""
        import sys, weakref
        from raysweep.trainable import quiet_exit_in_callbacks

        class Target:
            pass

        def fire(kind):
            target = Target()

            def callback(_):
                raise kind(f"raised-{kind.__name__}")

            ref = weakref.ref(target, callback)
            del target  # the callback runs here, and Python prints what it raises
            return ref

        if sys.argv[1] == "hooked":
            quiet_exit_in_callbacks()
            quiet_exit_in_callbacks()  # a reused worker runs the trainable again: one hook, not two
        fire(SystemExit)
        fire(ValueError)
        print("still running")
    """)
    stderr = {}
    for mode in ("plain", "hooked"):
        done = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, timeout=120,
                              cwd=REPO)
        assert done.returncode == 0 and done.stdout == "still running\n", done.stderr[-2000:]
        stderr[mode] = done.stderr
    assert "SystemExit: raised-SystemExit" in stderr["plain"] and "raised-ValueError" in stderr["plain"]
    assert "SystemExit" not in stderr["hooked"]
    assert "Exception ignored" in stderr["hooked"] and "ValueError: raised-ValueError" in stderr["hooked"]


def test_the_trainable_sets_the_hook_in_its_worker(fake_tune, synthetic, monkeypatch):
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: None)
    trainable.trainable({"hidden": [8], "max_epochs": 1}, data=synthetic)
    assert getattr(sys.unraisablehook, "quiet_exit", False)


def test_on_cuda_the_report_adds_the_peak_memory_in_mib(monkeypatch):
    # No GPU here: the CUDA counter is stood in for, to check the key and the unit (bytes -> MiB).
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 3 * 2**20 + 2**19)
    assert trainable.device_report(torch.device("cuda")) == {"device": "cuda", "gpu_mem_peak_mb": 3.5}


def test_with_repeats_the_trial_reports_the_seeds_mean_and_each_seeds_metrics(fake_tune, synthetic):
    reported, _ = fake_tune
    config = {"hidden": [8], "max_epochs": 2, "seed": 3, "dropout": 0.2}
    trainable.trainable(config, data=synthetic, repeats=3)
    alone = [[m for m, _ in run_trial(c, synthetic)] for c in seed_configs(TrialConfig.from_dict(config), repeats=3)]
    assert len(reported) == 2
    for epoch, metrics in enumerate(reported):
        seeds = [run[epoch]["val_acc"] for run in alone]
        assert list(metrics[SEED_METRICS]) == ["3", "4", "5"]  # by seed number
        assert [m["val_acc"] for m in metrics[SEED_METRICS].values()] == seeds  # each seed as if run alone
        assert metrics["val_acc"] == pytest.approx(sum(seeds) / 3)
        assert metrics["val_acc_std"] == pytest.approx(torch.tensor(seeds).std().item())
        assert metrics["seeds"] == 3 and metrics["epoch"] == epoch + 1


def test_a_checkpoint_of_a_configuration_holds_every_seed_and_resumes_them(fake_tune, synthetic, tmp_path):
    reported, restore_from = fake_tune
    config = {"hidden": [8], "max_epochs": 2, "seed": 3}
    saved = []
    original = tune.report
    tune.report = lambda metrics, checkpoint: (saved.append(load_state(checkpoint.path, device="cpu")),
                                               original(metrics, checkpoint))
    try:
        trainable.trainable(config, data=synthetic, repeats=2)
    finally:
        tune.report = original
    assert [len(state["seeds"]) for state in saved] == [2, 2]
    whole = [m["val_acc"] for m in reported]
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    torch.save(saved[0], folder / CHECKPOINT_FILE)
    reported.clear()
    restore_from.append(tune.Checkpoint.from_directory(str(folder)))
    trainable.trainable(config, data=synthetic, repeats=2)
    assert [m["val_acc"] for m in reported] == whole[1:]  # epoch 2 only, as if never interrupted
    second = load_model(folder, TrialConfig.from_dict(config), input_shape=synthetic.input_shape,
                        num_classes=synthetic.num_classes, seed_index=1)
    name, weight = next(iter(saved[0]["seeds"][1]["model"].items()))
    assert torch.equal(second.state_dict()[name], weight)  # seed 1's own model, not seed 0's
    assert not torch.equal(weight, saved[0]["seeds"][0]["model"][name])
