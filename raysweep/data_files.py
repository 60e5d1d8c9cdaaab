"""The data sets' files on disk: MNIST's idx files and CIFAR-10's two layouts -> uint8 arrays, and a sha256 of
every byte read, so a sweep run records exactly which data it trained on (see data.Dataset.sha256).

The readers raise DataNotFoundError with one line for the user; data.py chooses which folder to read and splits.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import zlib
from pathlib import Path

import numpy as np

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR_PY_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
CIFAR_BIN_FILES = tuple(f"{f}.bin" for f in CIFAR_PY_FILES)
CIFAR_RECORD_BYTES = 1 + 3 * 32 * 32  # 1 label byte, then 1024 R, 1024 G, 1024 B bytes (row-major)

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_train, y_train, x_test, y_test


class DataNotFoundError(Exception):
    """A data set's files are missing or unreadable. The message is one line for the user; show no traceback."""


class Checksum:
    """sha256 over the bytes of every file read, in reading order (the files as stored: a .gz is hashed packed).

    Data sets without files of ours (digits from scikit-learn, the generated synthetic set) hash their arrays
    instead (`add_arrays`), so every Dataset carries one fingerprint of what the trials saw before the split."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.files: list[str] = []

    def read(self, path: Path) -> bytes:
        raw = path.read_bytes()
        self._sha.update(raw)
        self.files.append(path.name)
        return raw

    def add_arrays(self, arrays: Arrays) -> None:
        for array in arrays:
            self._sha.update(np.ascontiguousarray(array).tobytes())

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else 'no detail'}"


def read_idx(path: Path, checksum: Checksum | None = None) -> np.ndarray:
    """One idx file (MNIST's format: 0, 0, 0x08 = uint8, ndim, ndim big-endian int32 sizes, then the bytes)."""
    try:
        stored = checksum.read(path) if checksum is not None else path.read_bytes()
        raw = gzip.decompress(stored) if path.suffix == ".gz" else stored
    except (OSError, EOFError, zlib.error) as exc:  # a corrupt or cut-off .gz
        raise DataNotFoundError(f"{path} cannot be unpacked ({one_line(exc)}); put the official file there") from None
    ndim = raw[3] if len(raw) >= 4 else 0
    if raw[:3] != b"\x00\x00\x08" or ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise DataNotFoundError(f"{path} is not a uint8 idx file (header {raw[:8]!r}); put the official file there")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    if len(raw) != 4 + 4 * ndim + int(np.prod(shape)):
        raise DataNotFoundError(f"{path} is {len(raw)} bytes unpacked but its header says {shape}: truncated")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def read_idx_set(raw_dir: Path, checksum: Checksum) -> Arrays | None:
    """The four idx files in torchvision's `<root>/<Name>/raw`, unpacked or .gz; None if one is missing."""
    paths = []
    for stem in IDX_FILES:
        found = [p for p in (raw_dir / stem, raw_dir / f"{stem}.gz") if p.is_file()]
        if not found:
            return None
        paths.append(found[0])  # the unpacked file reads faster than the .gz
    x_train, y_train, x_test, y_test = (read_idx(p, checksum) for p in paths)
    for x, y, path in ((x_train, y_train, paths[0]), (x_test, y_test, paths[2])):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataNotFoundError(f"{path} holds images {x.shape} for labels {y.shape}, not (N, H, W) and (N,)")
    return x_train[:, None], y_train.astype(np.int64), x_test[:, None], y_test.astype(np.int64)


def read_cifar_bin(folder: Path, checksum: Checksum) -> Arrays:
    batches = []
    for name in CIFAR_BIN_FILES:
        records = np.frombuffer(checksum.read(folder / name), np.uint8)
        if records.size % CIFAR_RECORD_BYTES:
            raise DataNotFoundError(f"{folder / name} is {records.size} bytes, not whole "
                                    f"{CIFAR_RECORD_BYTES}-byte CIFAR-10 records: truncated")
        records = records.reshape(-1, CIFAR_RECORD_BYTES)
        batches.append((records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)))
    return _join_cifar(batches)


def read_cifar_py(folder: Path, checksum: Checksum) -> Arrays:
    batches = []
    for name in CIFAR_PY_FILES:
        try:
            # Official pickles come from Python 2; encoding="bytes" gives keys b"data" and b"labels".
            entry = pickle.loads(checksum.read(folder / name), encoding="bytes")
            data, labels = entry.get(b"data", entry.get("data")), entry.get(b"labels", entry.get("labels"))
            batches.append((np.asarray(data, np.uint8).reshape(-1, 3, 32, 32), np.asarray(labels, np.int64)))
        except Exception as exc:  # any unreadable pickle: same one-line answer
            raise DataNotFoundError(f"{folder / name} is not a CIFAR-10 python batch ({one_line(exc)}); "
                                    "put the official file there") from None
    return _join_cifar(batches)


def _join_cifar(batches: list[tuple[np.ndarray, np.ndarray]]) -> Arrays:
    x_test, y_test = batches[-1]
    # Copies: frombuffer views of the files' bytes are read-only and would keep every file's bytes alive.
    return (np.concatenate([x for x, _ in batches[:-1]]), np.concatenate([y for _, y in batches[:-1]]),
            np.array(x_test), np.array(y_test))
