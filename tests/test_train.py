"""TrialConfig's rules, the training loop (learns, is seeded, stops on divergence and early stopping, resumes), and
the trainable's checkpoints (plain tensors only) and device report."""

import pathlib
import pickle

import pytest
import ray
import torch
from ray import tune

from raysweep import data, train
from raysweep.config import ConfigError, TrialConfig
from raysweep.optim import OPTIMIZERS
from raysweep.train import CHECKPOINT_FILE, load_state, run_trial


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


@pytest.fixture(scope="module")
def synthetic():
    return data.load("synthetic", subset=600)


@pytest.mark.parametrize(
    "values,message",
    [
        ({"optimizer": "adamax"}, r"`optimizer` must be one of \[.*'adam'.*\], but got optimizer='adamax'"),
        ({"lr": -0.1}, r"`lr` must be > 0 and finite, but got lr=-0.1"),
        ({"lr": 0}, r"`lr` must be > 0"),
        ({"regularizer.l1_ratio": 1.5}, r"`regularizer.l1_ratio` must be in \[0, 1\], but got .*=1.5"),
        ({"batch_size": 0}, r'`batch_size` must be an integer >= 1 or "full", but got batch_size=0'),
        ({"batch_size": "half"}, r"`batch_size` must be an integer >= 1 or \"full\", but got batch_size='half'"),
        ({"model": "resnet"}, r"`model` must be one of \['cae_mlp', 'mlp'\], but got model='resnet'"),
        ({"optimizer.momentun": 0.9}, r"unknown trial setting `optimizer.momentun`; valid .*optimizer.momentum"),
        ({"dropout": 1.0}, r"`dropout` must be in \[0, 1\)"),
        ({"hidden": [300, 100], "batch_norm": [3]}, r"`batch_norm` must be hidden layer numbers between 1 and"),
        ({"max_epochs": 2.5}, r"`max_epochs` must be of type int, but got max_epochs=2.5"),
        ({"lr": "fast"}, r"`lr` must be of type float, but got lr='fast'"),
    ],
)
def test_bad_settings_fail_at_once_naming_the_key_and_the_rule(values, message):
    with pytest.raises(ConfigError, match=message) as caught:
        TrialConfig.from_dict(values)
    assert "\n" not in str(caught.value)


def test_sampler_values_are_coerced_to_the_field_types():
    config = TrialConfig.from_dict({"batch_size": 64.0, "hidden": [300.0, 100], "lr": 1})
    assert config.batch_size == 64 and config.hidden == (300, 100) and config.lr == 1.0


def test_to_dict_round_trips_through_dotted_keys():
    config = TrialConfig.from_dict({"optimizer": "sgd", "optimizer.momentum": 0.5, "schedule.decay": 0.1})
    flat = config.to_dict()
    assert flat["optimizer.momentum"] == 0.5 and "optimizer_momentum" not in flat
    assert TrialConfig.from_dict(flat) == config


def final(config, dataset, **kwargs):
    history = [metrics for metrics, _ in run_trial(TrialConfig.from_dict(config), dataset, **kwargs)]
    return history


def test_mlp_on_digits_reaches_090_validation_accuracy(digits):
    history = final({"optimizer": "adam", "lr": 3e-3, "hidden": [128], "batch_size": 32, "max_epochs": 8}, digits)
    assert history[-1]["val_acc"] >= 0.90


def test_same_config_and_seed_give_the_same_metrics_on_cpu(synthetic):
    config = {"optimizer": "momentum", "hidden": [32], "dropout": 0.2, "max_epochs": 2, "seed": 3}
    first, second = final(config, synthetic), final(config, synthetic)
    assert [m["val_loss"] for m in first] == [m["val_loss"] for m in second]
    assert final({**config, "seed": 4}, synthetic)[-1]["val_loss"] != first[-1]["val_loss"]


def test_resuming_from_a_saved_checkpoint_continues_exactly(synthetic, tmp_path):
    config = TrialConfig.from_dict({"optimizer": "adam", "lr": 1e-3, "hidden": [32], "dropout": 0.1, "max_epochs": 3,
                                    "patience": 5})
    straight = [m["val_loss"] for m, _ in run_trial(config, synthetic)]
    first_two = list(run_trial(config, synthetic))[:2]
    torch.save(first_two[-1][1], tmp_path / CHECKPOINT_FILE)
    state = load_state(tmp_path, device="cpu")  # through the file, as the trainable resumes
    resumed = [m["val_loss"] for m, _ in run_trial(config, synthetic, state=state)]
    assert [m["val_loss"] for m, _ in first_two] + resumed == straight


def test_diverging_sgd_stops_in_its_first_epoch(synthetic):
    history = final({"optimizer": "sgd", "lr": 10.0, "hidden": [64, 64], "max_epochs": 5}, synthetic)
    assert len(history) == 1
    assert history[0]["diverged"]


def test_early_stopping_reports_the_epoch_it_stopped_at(synthetic):
    # lr tiny enough that val loss barely moves; min_delta larger than any move -> stops after `patience` epochs.
    history = final({"optimizer": "sgd", "lr": 1e-6, "patience": 2, "min_delta": 0.5, "max_epochs": 10}, synthetic)
    assert len(history) == 3
    assert history[-1]["early_stopped"] and history[-1]["epoch"] == 3


def test_batch_gd_takes_one_step_per_epoch(synthetic):
    history = final({"optimizer": "sgd", "batch_size": "full", "lr": 0.1, "max_epochs": 3}, synthetic)
    assert len(history) == 3
    assert history[-1]["val_loss"] < history[0]["val_loss"]


def test_autoencoder_reports_both_loss_parts(synthetic):
    history = final({"model": "cae_mlp", "optimizer": "adam", "lr": 1e-3, "hidden": [32], "max_epochs": 1}, synthetic)
    assert {"train_loss", "recon_loss", "val_loss", "val_recon_loss"} <= set(history[0])
    assert history[0]["recon_loss"] > 0


def test_inverse_time_decay_lowers_the_reported_lr(synthetic):
    history = final({"lr": 0.1, "schedule": "inverse_time", "schedule.decay": 0.01, "max_epochs": 2}, synthetic)
    steps = 600 // 32 + 1  # 19 batches of 32 in 600 examples
    assert history[-1]["lr"] == pytest.approx(0.1 / (1 + 0.01 * (2 * steps - 1)))


@pytest.mark.parametrize(
    "values",
    [{"optimizer": "nesterov", "optimizer.momentum": 0.0},
     {"optimizer": "sgd", "optimizer.nesterov": True, "optimizer.momentum": 0.0}],
)
def test_nesterov_without_momentum_fails_before_training(values):
    with pytest.raises(ConfigError, match=r"`optimizer.momentum` must be"):
        TrialConfig.from_dict(values)


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
        train.trainable({"hidden": [8], "max_epochs": 1}, data=synthetic)
    assert not marker.exists() and reported == []


def test_the_trainable_reports_the_device_it_trained_on(fake_tune, synthetic):
    reported, _ = fake_tune
    train.trainable({"hidden": [8], "max_epochs": 2}, data=synthetic)
    assert [m["device"] for m in reported] == ["cpu", "cpu"]
    assert not any("gpu_mem_peak_mb" in m for m in reported)  # CUDA only


def test_on_cuda_the_report_adds_the_peak_memory_in_mib(monkeypatch):
    # No GPU here: the CUDA counter is stood in for, to check the key and the unit (bytes -> MiB).
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 3 * 2**20 + 2**19)
    assert train.device_report(torch.device("cuda")) == {"device": "cuda", "gpu_mem_peak_mb": 3.5}
