"""raysweep.data: every data set, both CIFAR layouts, the validation split, the stats, and the missing-data path.

No test touches the network: `_download` is replaced in every test by one that fails like an offline machine.
"""

import gzip
import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest

from raysweep import data

SHARED_DATA = Path(os.environ.get("RAYSWEEP_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(autouse=True)
def offline_downloader(monkeypatch):
    """Every test runs as if offline; the list records each (name, root) that a download was attempted for."""
    calls = []

    def fail(name, root):
        calls.append((name, root))
        raise OSError("[Errno 101] Network is unreachable\n(second line that must not reach the user)")

    monkeypatch.setattr(data, "_download", fail)
    return calls


def need_shared(*parts: str) -> Path:
    folder = SHARED_DATA.joinpath(*parts)
    if not folder.is_dir():
        pytest.skip(f"shared data folder {folder} is absent (set RAYSWEEP_SHARED_DATA to its location)")
    return SHARED_DATA


def snapshot(folder: Path) -> list[tuple[str, int, int, int]]:
    """Every file and folder under `folder` with its size, mtime (ns) and mode: any write changes this."""
    paths = [folder, *sorted(folder.rglob("*"))]
    return [(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_mode) for p in paths]


def write_idx(path: Path, array: np.ndarray) -> None:
    """An idx file as MNIST ships it: 0, 0, 0x08 (uint8), ndim, big-endian int32 sizes, bytes; .gz if so named."""
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    payload = header + np.ascontiguousarray(array, np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


def fake_idx_set(raw_dir: Path, *, n_train: int = 200, n_test: int = 50, gz: bool = True) -> dict:
    """Tiny MNIST-layout files. Pixel [0, 0] of each training image holds its index, so picks can be traced."""
    rng = np.random.default_rng(123)
    x_train = rng.integers(0, 100, (n_train, 28, 28), dtype=np.uint8)
    x_train[:, 0, 0] = np.arange(n_train)
    x_test = rng.integers(0, 100, (n_test, 28, 28), dtype=np.uint8)
    arrays = {"train-images-idx3-ubyte": x_train, "train-labels-idx1-ubyte": np.arange(n_train) % 10,
              "t10k-images-idx3-ubyte": x_test, "t10k-labels-idx1-ubyte": np.arange(n_test)[::-1] % 10}
    raw_dir.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        write_idx(raw_dir / (f"{stem}.gz" if gz else stem), array)
    return arrays


def picked(x: np.ndarray) -> list[int]:
    """The training-file indices of the images in x (see fake_idx_set)."""
    return [int(i) for i in x[:, 0, 0, 0]]


@pytest.fixture(scope="module")
def shared_loads():
    """Load MNIST and CIFAR-10 from the shared folder once, downloads allowed, snapshotting the folder around it."""
    root = need_shared()
    downloads = []
    before = snapshot(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data, "_download", lambda name, root: downloads.append(name))
        loaded = {name: data.load(name, data_dir=root) for name in ("mnist", "cifar10")
                  if (root / {"mnist": "MNIST", "cifar10": "cifar-10-batches-bin"}[name]).is_dir()}
    return {"before": before, "after": snapshot(root), "downloads": downloads, **loaded}


def test_mnist_from_shared_folder_has_55000_train_5000_val_10000_test(shared_loads):
    need_shared("MNIST", "raw")
    mnist = shared_loads["mnist"]
    assert (len(mnist.x_train), len(mnist.x_val), len(mnist.x_test)) == (55000, 5000, 10000)
    assert mnist.input_shape == (1, 28, 28) and mnist.num_classes == 10
    assert mnist.x_train.dtype == np.uint8 and mnist.y_train.dtype == np.int64


def test_mnist_label_counts_are_the_official_ones(shared_loads):
    need_shared("MNIST", "raw")
    mnist = shared_loads["mnist"]
    train_counts = np.bincount(np.concatenate([mnist.y_val, mnist.y_train]), minlength=10)
    assert train_counts.tolist() == MNIST_TRAIN_COUNTS and train_counts.sum() == 60000
    assert np.bincount(mnist.y_test, minlength=10).tolist() == MNIST_TEST_COUNTS


def test_cifar10_from_shared_binary_layout_has_45000_train_5000_val_10000_test(shared_loads):
    need_shared("cifar-10-batches-bin")
    cifar = shared_loads["cifar10"]
    assert (len(cifar.x_train), len(cifar.x_val), len(cifar.x_test)) == (45000, 5000, 10000)
    assert cifar.input_shape == (3, 32, 32) and cifar.classes[0] == "airplane" and cifar.classes[9] == "truck"


def test_cifar10_has_5000_images_per_class_in_train_and_1000_in_test(shared_loads):
    need_shared("cifar-10-batches-bin")
    cifar = shared_loads["cifar10"]
    assert np.bincount(np.concatenate([cifar.y_val, cifar.y_train]), minlength=10).tolist() == [5000] * 10
    assert np.bincount(cifar.y_test, minlength=10).tolist() == [1000] * 10


def test_loading_from_shared_folder_writes_nothing_into_it(shared_loads):
    assert {"mnist", "cifar10"} & shared_loads.keys()  # something was loaded from it
    assert shared_loads["after"] == shared_loads["before"]
    assert shared_loads["downloads"] == []


def cifar_records(n: int) -> list[np.ndarray]:
    """The first n records of each CIFAR-10 binary batch (random bytes if the shared copy is absent)."""
    folder = SHARED_DATA / "cifar-10-batches-bin"
    if folder.is_dir():
        return [np.fromfile(folder / name, np.uint8, count=n * 3073).reshape(n, 3073)
                for name in data.CIFAR_BIN_FILES]
    rng = np.random.default_rng(0)
    return [np.column_stack([rng.integers(0, 10, n), rng.integers(0, 256, (n, 3072))]).astype(np.uint8)
            for _ in data.CIFAR_BIN_FILES]


def test_cifar10_python_and_binary_layouts_give_identical_arrays(tmp_path):
    records = cifar_records(20)
    bin_dir, py_dir = tmp_path / "bin" / "cifar-10-batches-bin", tmp_path / "py" / "cifar-10-batches-py"
    bin_dir.mkdir(parents=True)
    py_dir.mkdir(parents=True)
    for bin_name, py_name, rec in zip(data.CIFAR_BIN_FILES, data.CIFAR_PY_FILES, records, strict=True):
        rec.tofile(bin_dir / bin_name)
        entry = {b"batch_label": py_name.encode(), b"labels": [int(v) for v in rec[:, 0]],
                 b"data": rec[:, 1:].copy(), b"filenames": [b"x.png"] * len(rec)}
        (py_dir / py_name).write_bytes(pickle.dumps(entry, protocol=2))

    from_bin = data.load("cifar10", data_dir=tmp_path / "bin", val_size=10)
    from_py = data.load("cifar10", data_dir=tmp_path / "py", val_size=10)
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert np.array_equal(getattr(from_bin, field), getattr(from_py, field)), field
    # R, then G, then B: the first record's red plane is its first 1024 pixel bytes.
    assert np.array_equal(from_py.x_val[0, 0].ravel(), records[0][0, 1:1025])
    assert from_py.y_test.tolist() == records[-1][:, 0].tolist()


def test_fashion_mnist_loads_from_gz_idx_files_in_torchvision_layout(tmp_path):
    written = fake_idx_set(tmp_path / "FashionMNIST" / "raw")
    fashion = data.load("fashion_mnist", data_dir=tmp_path, val_size=20)
    assert fashion.classes[0] == "T-shirt/top" and fashion.input_shape == (1, 28, 28)
    assert np.array_equal(fashion.x_train[:, 0], written["train-images-idx3-ubyte"][20:])
    assert np.array_equal(fashion.x_test[:, 0], written["t10k-images-idx3-ubyte"])
    assert fashion.y_test.tolist() == written["t10k-labels-idx1-ubyte"].tolist()


def test_unpacked_idx_files_are_read_without_their_gz(tmp_path):
    written = fake_idx_set(tmp_path / "MNIST" / "raw", gz=False)
    mnist = data.load("mnist", data_dir=tmp_path, val_size=20)
    assert np.array_equal(mnist.x_val[:, 0], written["train-images-idx3-ubyte"][:20])
    assert not list((tmp_path / "MNIST" / "raw").glob("*.gz"))


@pytest.mark.parametrize("content", [
    gzip.compress(bytes([0, 0, 8, 3, 0, 0, 0, 9])),  # header cut short
    gzip.compress(bytes([0, 0, 8, 3]) + np.asarray([10, 28, 28], ">i4").tobytes() + bytes(100)),  # data cut short
    gzip.compress(b"<html>not found</html>"),  # an error page saved under the file's name
    b"not gzip at all",
])
def test_unreadable_idx_file_raises_one_line_error_naming_it(tmp_path, content):
    raw = tmp_path / "MNIST" / "raw"
    fake_idx_set(raw)
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(content)
    with pytest.raises(data.DataNotFoundError, match="t10k-images-idx3-ubyte.gz") as info:
        data.load("mnist", data_dir=tmp_path, val_size=20)
    assert "\n" not in str(info.value)


def test_unreadable_cifar_pickle_raises_one_line_error_naming_it(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in data.CIFAR_PY_FILES:
        (folder / name).write_bytes(b"\x80\x02garbage")
    with pytest.raises(data.DataNotFoundError, match="data_batch_1 is not a CIFAR-10 python batch") as info:
        data.load("cifar10", data_dir=tmp_path)
    assert "\n" not in str(info.value)


def test_digits_are_uint8_0_to_255_with_a_test_split_fixed_across_seeds():
    first = data.load("digits")
    other = data.load("digits", seed=7, val_pick="random", val_size=100)
    assert first.input_shape == (1, 8, 8) and first.x_train.dtype == np.uint8
    assert len(first.x_train) + len(first.x_val) + len(first.x_test) == 1797 and len(first.x_test) == 359
    assert set(np.unique(first.x_train).tolist()) <= {round(v * 255 / 16) for v in range(17)}
    assert first.x_train.max() == 255
    assert np.array_equal(first.x_test, other.x_test) and np.array_equal(first.y_test, other.y_test)


def test_synthetic_is_the_same_for_a_seed_and_differs_across_seeds():
    a, b, c = data.load("synthetic", seed=3), data.load("synthetic", seed=3), data.load("synthetic", seed=4)
    assert (len(a.x_train) + len(a.x_val), len(a.x_test)) == data.SYNTHETIC_SIZES
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, c.x_train)


@pytest.mark.parametrize("image_shape", [(1, 28, 28), (3, 8, 8), (3, 32, 32)])
def test_synthetic_has_the_chosen_shape_and_is_learnable(image_shape):
    synthetic = data.load("synthetic", image_shape=image_shape)
    assert synthetic.input_shape == image_shape
    # A nearest-class-mean classifier fit on train must beat chance (10%) by far on the test split.
    x_train = synthetic.x_train.reshape(len(synthetic.x_train), -1).astype(np.float64)
    centroids = np.stack([x_train[synthetic.y_train == k].mean(axis=0) for k in range(10)])
    x_test = synthetic.x_test.reshape(len(synthetic.x_test), -1).astype(np.float64)
    predicted = ((x_test[:, None, :] - centroids[None]) ** 2).sum(axis=2).argmin(axis=1)
    assert (predicted == synthetic.y_test).mean() > 0.9


def test_image_shape_is_rejected_for_data_sets_other_than_synthetic():
    with pytest.raises(ValueError, match="image_shape.*'digits'"):
        data.load("digits", image_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="image_shape"):
        data.load("synthetic", image_shape=(28, 28))


def test_val_size_count_takes_the_first_training_images(tmp_path):
    fake_idx_set(tmp_path / "MNIST" / "raw")
    mnist = data.load("mnist", data_dir=tmp_path, val_size=30)
    assert picked(mnist.x_val) == list(range(30)) and picked(mnist.x_train) == list(range(30, 200))
    assert mnist.y_val.tolist() == [i % 10 for i in range(30)]


def test_val_size_fraction_is_that_share_of_the_training_images(tmp_path):
    fake_idx_set(tmp_path / "MNIST" / "raw")
    mnist = data.load("mnist", data_dir=tmp_path, val_size=0.25)
    assert picked(mnist.x_val) == list(range(50)) and len(mnist.x_train) == 150


def test_random_val_pick_is_fixed_by_seed_and_disjoint_from_train(tmp_path):
    fake_idx_set(tmp_path / "MNIST" / "raw")
    a, b, c = (data.load("mnist", data_dir=tmp_path, val_size=40, val_pick="random", seed=s) for s in (1, 1, 2))
    assert picked(a.x_val) == picked(b.x_val) and picked(a.x_val) != picked(c.x_val)
    assert picked(a.x_val) != list(range(40))
    assert sorted(picked(a.x_val) + picked(a.x_train)) == list(range(200))
    assert a.y_val.tolist() == [i % 10 for i in picked(a.x_val)]


@pytest.mark.parametrize("val_size", [0, -5, 200, 1000, 0.0, 1.0, 1.5, -0.1, 0.001, True, "100", [5]])
def test_invalid_val_size_raises_naming_val_size_and_the_rule(tmp_path, val_size):
    fake_idx_set(tmp_path / "MNIST" / "raw")
    with pytest.raises(ValueError, match=r"`val_size` must be an int in \[1, 199\] or a float in \(0, 1\)"):
        data.load("mnist", data_dir=tmp_path, val_size=val_size)


def test_default_val_size_of_5000_does_not_fit_a_tiny_mnist(tmp_path):
    fake_idx_set(tmp_path / "MNIST" / "raw")
    with pytest.raises(ValueError, match="val_size=5000"):
        data.load("mnist", data_dir=tmp_path)


def test_subset_keeps_the_first_training_images_after_the_val_split(tmp_path):
    fake_idx_set(tmp_path / "MNIST" / "raw")
    mnist = data.load("mnist", data_dir=tmp_path, val_size=30, subset=12)
    assert picked(mnist.x_train) == list(range(30, 42)) and len(mnist.y_train) == 12
    assert picked(mnist.x_val) == list(range(30)) and len(mnist.x_test) == 50


@pytest.mark.parametrize("subset", [0, -1, 171, 2.5, True])
def test_invalid_subset_raises_naming_subset(tmp_path, subset):
    fake_idx_set(tmp_path / "MNIST" / "raw")
    with pytest.raises(ValueError, match=r"`subset` must be an int in \[1, 170\]"):
        data.load("mnist", data_dir=tmp_path, val_size=30, subset=subset)


def test_normalisation_stats_come_from_the_training_split_only(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    fake_idx_set(raw)
    images = data._read_idx(raw / "train-images-idx3-ubyte.gz").copy()
    images[:50] = 255  # the would-be validation images are white; the rest are 0..99
    write_idx(raw / "train-images-idx3-ubyte.gz", images)
    mnist = data.load("mnist", data_dir=tmp_path, val_size=50)
    train = mnist.x_train.astype(np.float64) / 255
    assert mnist.mean == pytest.approx((train.mean(),), abs=1e-9)
    assert mnist.std == pytest.approx((train.std(),), abs=1e-9)
    assert mnist.mean[0] < 100 / 255  # white validation images would have pulled it up


def test_per_channel_stats_match_numpy_on_three_channels():
    synthetic = data.load("synthetic", image_shape=(3, 8, 8))
    train = synthetic.x_train.astype(np.float64) / 255
    assert synthetic.mean == pytest.approx(tuple(train.mean(axis=(0, 2, 3))), abs=1e-9)
    assert synthetic.std == pytest.approx(tuple(train.std(axis=(0, 2, 3))), abs=1e-9)


@pytest.mark.parametrize(("name", "folders"), [
    ("mnist", ["MNIST/raw"]),
    ("fashion_mnist", ["FashionMNIST/raw"]),
    ("cifar10", ["cifar-10-batches-py", "cifar-10-batches-bin"]),
])
def test_missing_data_with_download_off_raises_one_line_naming_set_and_folders(tmp_path, name, folders):
    with pytest.raises(data.DataNotFoundError) as info:
        data.load(name, data_dir=tmp_path, download=False)
    message = str(info.value)
    assert "\n" not in message and repr(name) in message and "download=False" in message
    assert all(str(tmp_path / folder) in message for folder in folders)
    assert "put " in message and ("-ubyte.gz" in message or "data_batch_1.bin" in message)


def test_failed_download_raises_one_line_with_the_reason(tmp_path, offline_downloader):
    with pytest.raises(data.DataNotFoundError) as info:
        data.load("fashion_mnist", data_dir=tmp_path)
    message = str(info.value)
    assert offline_downloader == [("fashion_mnist", tmp_path.resolve())]
    assert "\n" not in message and "Network is unreachable" in message and "second line" not in message
    assert str(tmp_path / "FashionMNIST" / "raw") in message


def test_missing_files_are_downloaded_into_the_data_dir_then_read(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_download", lambda name, root: fake_idx_set(root / "FashionMNIST" / "raw"))
    fashion = data.load("fashion_mnist", data_dir=tmp_path / "new", val_size=20)
    assert len(fashion.x_train) == 180 and (tmp_path / "new" / "FashionMNIST" / "raw").is_dir()


def test_read_only_folder_is_never_downloaded_into(tmp_path, offline_downloader):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)  # r-x: shared for reading
    try:
        with pytest.raises(data.DataNotFoundError, match="read-only"):
            data.load("mnist", data_dir=read_only)
        assert offline_downloader == [] and list(read_only.iterdir()) == []
    finally:
        read_only.chmod(0o755)


def test_unknown_data_set_name_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown data set 'imagenet'") as info:
        data.load("imagenet")
    assert all(name in str(info.value) for name in data.DATASETS)


def test_unknown_val_pick_lists_the_valid_values():
    with pytest.raises(ValueError, match="'last'.*first, random"):
        data.load("synthetic", val_pick="last")


def test_data_dir_comes_from_argument_then_env_then_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAYSWEEP_DATA_DIR", raising=False)
    assert data.resolve_data_dir(None) == tmp_path / "home" / ".cache" / "raysweep" / "data"
    monkeypatch.setenv("RAYSWEEP_DATA_DIR", str(tmp_path / "env"))
    assert data.resolve_data_dir(None) == tmp_path / "env"
    assert data.resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"
    assert not (tmp_path / "home").exists() and not (tmp_path / "env").exists()


def test_loaded_arrays_are_read_only_like_in_the_object_store():
    synthetic = data.load("synthetic", image_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="read-only"):
        synthetic.x_train[0, 0, 0, 0] = 1
    assert not synthetic.y_val.flags.writeable
