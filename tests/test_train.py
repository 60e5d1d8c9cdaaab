"""TrialConfig's rules, the training loop (learns, is seeded, stops on divergence and early stopping, resumes), and
the trainable's checkpoints (plain tensors only) and device report."""


import pytest
import torch

from raysweep import data
from raysweep.config import ConfigError, TrialConfig
from raysweep.train import run_trial
from raysweep.trainable import CHECKPOINT_FILE, load_state


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


@pytest.fixture(scope="module")
def synthetic():
    return data.load("synthetic", subset=600)


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
