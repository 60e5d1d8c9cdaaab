"""The data files' readers and the checksum a sweep run records: the sha256 is hashlib's over exactly the files
read, in reading order, and it changes when one byte of the data changes."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from raysweep import data, data_files

SHARED_DATA = Path(os.environ.get("RAYSWEEP_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def write_idx_set(raw_dir: Path, *, n_train: int = 60, n_test: int = 20, seed: int = 0) -> list[Path]:
    """Four gzipped idx files of random 4x4 images, in the order data_files.IDX_FILES names them."""
    rng = np.random.default_rng(seed)
    raw_dir.mkdir(parents=True, exist_ok=True)
    arrays = (rng.integers(0, 256, (n_train, 4, 4)), rng.integers(0, 10, n_train),
              rng.integers(0, 256, (n_test, 4, 4)), rng.integers(0, 10, n_test))
    paths = []
    for stem, array in zip(data_files.IDX_FILES, arrays, strict=True):
        array = array.astype(np.uint8)
        header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
        path = raw_dir / f"{stem}.gz"
        path.write_bytes(gzip.compress(header + array.tobytes()))
        paths.append(path)
    return paths


def sha256_of(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_dataset_sha256_is_the_hash_of_the_files_read_in_order(tmp_path):
    paths = write_idx_set(tmp_path / "MNIST" / "raw")
    mnist = data.load("mnist", data_dir=tmp_path, val_size=10, download=False)
    assert mnist.sha256 == sha256_of(paths)


def test_dataset_sha256_changes_when_one_byte_of_a_file_changes(tmp_path):
    write_idx_set(tmp_path / "a" / "MNIST" / "raw", seed=0)
    write_idx_set(tmp_path / "b" / "MNIST" / "raw", seed=0)
    labels = tmp_path / "b" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10  # one test label differs
    labels.write_bytes(gzip.compress(bytes(raw)))
    first = data.load("mnist", data_dir=tmp_path / "a", val_size=10, download=False)
    second = data.load("mnist", data_dir=tmp_path / "b", val_size=10, download=False)
    assert first.sha256 != second.sha256


def test_sha256_does_not_depend_on_the_split_only_on_the_data(tmp_path):
    write_idx_set(tmp_path / "MNIST" / "raw")
    one = data.load("mnist", data_dir=tmp_path, val_size=10, download=False)
    other = data.load("mnist", data_dir=tmp_path, val_size=20, val_pick="random", seed=3, download=False)
    assert one.sha256 == other.sha256 and len(one.x_val) != len(other.x_val)


def test_shared_cifar10_binary_checksum_covers_its_six_batches():
    folder = SHARED_DATA / "cifar-10-batches-bin"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    checksum = data_files.Checksum()
    data_files.read_cifar_bin(folder, checksum)
    assert checksum.files == list(data_files.CIFAR_BIN_FILES)
    assert checksum.hexdigest() == sha256_of([folder / name for name in data_files.CIFAR_BIN_FILES])


def test_digits_without_files_are_fingerprinted_by_their_arrays():
    digits = data.load("digits", val_size=0.2)
    again = data.load("digits", val_size=0.3, val_pick="random", seed=1)
    synthetic = data.load("synthetic", seed=0)
    assert len(digits.sha256) == 64 and digits.sha256 == again.sha256
    assert synthetic.sha256 != data.load("synthetic", seed=1).sha256


def test_a_cut_idx_file_is_refused_with_one_line_naming_it(tmp_path):
    paths = write_idx_set(tmp_path)
    paths[0].write_bytes(paths[0].read_bytes()[:20])
    with pytest.raises(data_files.DataNotFoundError, match="train-images-idx3-ubyte.gz") as info:
        data_files.read_idx(paths[0])
    assert "\n" not in str(info.value)
