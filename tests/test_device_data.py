"""The data on a trial's device: uint8 images shared with the data set's arrays (no float copy of a split, no copy at
all on the CPU, none per seed), normalised batch by batch to (x / 255 - mean) / std."""

import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from raysweep import data, device_data, seeds
from raysweep.config import TrialConfig
from raysweep.device_data import DeviceData, Normalize, shared_tensors, to_tensors
from raysweep.models import build_model
from raysweep.train import evaluate

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def test_on_the_cpu_the_splits_stay_uint8_and_share_the_data_sets_memory(digits):
    tensors = DeviceData.from_arrays(digits, device="cpu")
    for tensor, array in ((tensors.x_train, digits.x_train), (tensors.x_val, digits.x_val),
                          (tensors.y_train, digits.y_train), (tensors.y_val, digits.y_val)):
        assert np.shares_memory(tensor.numpy(), array)
    assert tensors.x_train.dtype == tensors.x_val.dtype == torch.uint8


def test_arrays_from_rays_object_store_are_shared_without_a_warning():
    # A fresh process: torch warns about a read-only array once per process, so only there can the warning be seen.
    # The arrays come out of Ray's object store read-only, as a trial receives them.
    script = textwrap.dedent("""
        import numpy as np, ray, torch
        from raysweep.device_data import shared_tensors
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        x, y = ray.get(ray.put((np.arange(2 * 3 * 32 * 32, dtype=np.uint8).reshape(2, 3, 32, 32),
                                np.array([3, 7], dtype=np.int64))))
        assert not x.flags.writeable
        images, labels = shared_tensors(x, y, device="cpu")
        print(images.data_ptr() == x.ctypes.data, labels.data_ptr() == y.ctypes.data, images.dtype)
        ray.shutdown()
    """)
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", script], capture_output=True, text=True,
                          timeout=300, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "True", "torch.uint8"]


def test_normalize_gives_x_over_255_minus_mean_over_std_per_channel():
    stats = types.SimpleNamespace(mean=(0.5, 0.1, 0.2), std=(0.25, 0.5, 0.1))
    images = torch.tensor([255, 0, 51], dtype=torch.uint8).view(1, 3, 1, 1)
    # By hand: (1 - 0.5) / 0.25 = 2; (0 - 0.1) / 0.5 = -0.2; (0.2 - 0.2) / 0.1 = 0.
    out = Normalize.of(stats, device="cpu")(images)
    assert out.dtype == torch.float32
    assert out.flatten().tolist() == pytest.approx([2.0, -0.2, 0.0], abs=1e-6)


def test_to_tensors_is_the_float64_formula_to_float32_rounding(digits):
    x, y = to_tensors(digits, digits.x_test, digits.y_test, device="cpu")
    mean, std = (np.asarray(s).reshape(1, -1, 1, 1) for s in (digits.mean, digits.std))
    expected = (digits.x_test / 255.0 - mean) / std  # float64
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-6, atol=1e-6)
    assert y.tolist() == digits.y_test.tolist()


def test_uint8_images_without_their_normalisation_are_refused(digits):
    model = build_model(TrialConfig.from_dict({"hidden": [8]}), input_shape=digits.input_shape, num_classes=10)
    x, y = shared_tensors(digits.x_val, digits.y_val, device="cpu")
    with pytest.raises(ValueError, match=r"`normalize` must be given for torch.uint8 images"):
        evaluate(model, x, y)


def test_float_images_are_refused_where_uint8_is_expected():
    with pytest.raises(ValueError, match=r"images must be uint8 .* but got torch.float32"):
        shared_tensors(np.zeros((2, 1, 8, 8), np.float32), np.zeros(2, np.int64), device="cpu")


def test_the_seeds_of_a_trial_share_one_copy_of_the_data(digits, monkeypatch):
    built = []
    real = device_data.shared_tensors

    def counting(x, y, *, device):
        built.append(len(x))
        return real(x, y, device=device)

    monkeypatch.setattr(device_data, "shared_tensors", counting)
    fresh = data.load("digits")  # a data set no other test has put on the device yet
    config = TrialConfig.from_dict({"hidden": [16], "max_epochs": 1})
    results = list(seeds.run_seeds(config, fresh, repeats=3, device="cpu"))
    assert len(results) == 1 and len(results[0][1]) == 3
    assert built == [len(fresh.x_train), len(fresh.x_val)]  # one train and one val split for the three seeds


def test_a_batch_normalised_alone_equals_its_rows_of_the_normalised_split(digits):
    # What lets the test split's float copy (to_tensors) and training's per-batch normalisation agree bit for bit.
    normalize = Normalize.of(digits, device="cpu")
    x, _ = shared_tensors(digits.x_train, digits.y_train, device="cpu")
    whole = normalize(x)
    rows = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:77]
    assert torch.equal(normalize(x.index_select(0, rows)), whole.index_select(0, rows))
    assert torch.equal(normalize(x[5:6]), whole[5:6])
