"""Data sets -> uint8 image arrays + normalisation stats, and where the data lives.

`load(name, ...)` runs once per sweep on the driver. Images stay uint8 (N, C, H, W), a quarter of float32's
bytes in the object store; each trial scales them by 1/255 and normalises with `mean` / `std` on its device.
"""

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

import numpy as np

# The file readers live in data_files; their names are re-exported here, where callers have always found them.
from raysweep.data_files import (
    CIFAR_BIN_FILES,
    CIFAR_PY_FILES,
    IDX_FILES,
    Arrays,
    Checksum,
    DataNotFoundError,
    one_line,
    read_cifar_bin,
    read_cifar_py,
    read_idx,
    read_idx_set,
)

DEFAULT_DATA_DIR = Path("~/.cache/raysweep/data")
VAL_PICKS = ("first", "random")

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 1797  # fixed on purpose: the digits test set never depends on `seed`
SYNTHETIC_SIZES = (2000, 500)  # (train, test) images

DIGIT_NAMES = tuple(str(d) for d in range(10))
FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

_read_idx = read_idx  # the name tests/test_data.py reads


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """One data set split three ways. Images are uint8 (N, C, H, W), labels int64 (N,); all arrays read-only."""

    name: str
    classes: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray  # held out: only the final evaluation of the best trial reads it
    y_test: np.ndarray
    mean: tuple[float, ...]  # per channel, pixel units in [0, 1], from x_train only
    std: tuple[float, ...]
    sha256: str = ""  # of the files read (or the arrays of a data set without files): see data_files.Checksum

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x_train.shape[1:]
        return (c, h, w)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={len(self.x_train)}, val={len(self.x_val)}, "
                f"test={len(self.x_test)}, input_shape={self.input_shape}, classes={self.num_classes})")


@dataclass(frozen=True)
class DatasetInfo:
    """How to get one data set: `read(root, *, name, download, seed, image_shape, checksum) -> Arrays`."""

    read: Callable[..., Arrays]
    classes: tuple[str, ...]
    default_val_size: int | float  # what load(val_size=None) uses


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """`data_dir` if given, else $RAYSWEEP_DATA_DIR, else ~/.cache/raysweep/data. Creates nothing."""
    chosen = data_dir if data_dir is not None else os.environ.get("RAYSWEEP_DATA_DIR") or DEFAULT_DATA_DIR
    return Path(chosen).expanduser().resolve()


# ------------------------------------------------------------------------------------ files on disk, download
def _is_writable(path: Path) -> bool:
    """May we write under `path`? Mode bits count even for root: a r-x folder was shared for reading only."""
    while not path.exists():
        path = path.parent
    return os.access(path, os.W_OK) and bool(path.stat().st_mode & stat.S_IWUSR)


def _download(name: str, root: Path) -> None:
    """torchvision's downloader into `root`; imported here because it is slow to import and rarely needed."""
    from torchvision import datasets

    classes = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10}
    for train in (True, False):
        classes[name](root=str(root), train=train, download=True)


Target = tuple[Path, Callable[[], Arrays | None]]  # a folder, and its reader (None when files are missing)


def _find_or_download(name: str, root: Path, *, download: bool, targets: list[Target], what: str) -> Arrays:
    """Read the first target folder that has the files; else download into targets[0]; else one-line error."""
    for _, reader in targets:
        arrays = reader()
        if arrays is not None:
            return arrays
    if not download:
        why = "download=False"
    elif not (_is_writable(root) and _is_writable(targets[0][0])):
        why = f"{root} is read-only, so nothing was downloaded into it"
    else:
        try:
            _download(name, root)
        except Exception as exc:  # offline, refused, interrupted: all end in the same one-line message
            why = f"download failed: {one_line(exc)}"
        else:
            arrays = targets[0][1]()
            if arrays is not None:
                return arrays
            why = f"the download finished but left no complete set in {targets[0][0]}"
    folders = " and ".join(str(folder) for folder, _ in targets)
    raise DataNotFoundError(f"data set {name!r} not found in {folders} ({why}); put {what}, "
                            f"or point --data-dir / $RAYSWEEP_DATA_DIR at a folder that has them")


def _read_mnist_like(folder: str) -> Callable[..., Arrays]:
    def read(root: Path, *, name: str, download: bool, checksum: Checksum, **_: object) -> Arrays:
        raw_dir = root / folder / "raw"
        what = f"{', '.join(f'{stem}.gz' for stem in IDX_FILES)} in {raw_dir}"
        targets = [(raw_dir, lambda: read_idx_set(raw_dir, checksum))]
        return _find_or_download(name, root, download=download, targets=targets, what=what)

    return read


def _if_complete(folder: Path, files: tuple[str, ...], reader: Callable[[Path, Checksum], Arrays],
                 checksum: Checksum) -> Target:
    return folder, lambda: reader(folder, checksum) if all((folder / f).is_file() for f in files) else None


def _read_cifar10(root: Path, *, name: str, download: bool, checksum: Checksum, **_: object) -> Arrays:
    py_dir, bin_dir = root / "cifar-10-batches-py", root / "cifar-10-batches-bin"
    targets = [_if_complete(py_dir, CIFAR_PY_FILES, read_cifar_py, checksum),  # first: torchvision downloads it
               _if_complete(bin_dir, CIFAR_BIN_FILES, read_cifar_bin, checksum)]
    what = (f"the python version's {', '.join(CIFAR_PY_FILES)} in {py_dir}, "
            f"or the binary version's {', '.join(CIFAR_BIN_FILES)} in {bin_dir}")
    return _find_or_download(name, root, download=download, targets=targets, what=what)


# --------------------------------------------------------------------------------------- bundled, generated
def _read_digits(root: Path, **_: object) -> Arrays:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.rint(bunch.images * (255 / 16)).astype(np.uint8)[:, None]  # 0..16 -> 0..255, (N, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(x))
    n_test = round(len(x) * DIGITS_TEST_FRACTION)
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return x[train], y[train], x[test], y[test]


def _read_synthetic(root: Path, *, seed: int, image_shape: tuple[int, int, int] | None, **_: object) -> Arrays:
    """A learnable 10-class problem: one fixed blocky on/off pattern per class, plus Gaussian pixel noise."""
    c, h, w = image_shape or (1, 28, 28)
    rng = np.random.default_rng(seed)
    side = max(1, min(h, w) // 7)  # block side in pixels: >= 7x7 blocks per channel, so classes never coincide
    blocks = rng.random((10, c, -(-h // side), -(-w // side))) < 0.5  # (classes, C, H/side, W/side) on/off
    patterns = blocks.repeat(side, axis=2).repeat(side, axis=3)[:, :, :h, :w] * 160.0 + 40.0  # 0..255 units

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.permutation(np.arange(n) % 10).astype(np.int64)  # balanced classes
        x = patterns[y] + rng.normal(0.0, 60.0, (n, c, h, w))
        return np.clip(np.rint(x), 0, 255).astype(np.uint8), y

    (x_train, y_train), (x_test, y_test) = sample(SYNTHETIC_SIZES[0]), sample(SYNTHETIC_SIZES[1])
    return x_train, y_train, x_test, y_test


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(_read_digits, DIGIT_NAMES, default_val_size=0.2),
    "mnist": DatasetInfo(_read_mnist_like("MNIST"), DIGIT_NAMES, default_val_size=5000),
    "fashion_mnist": DatasetInfo(_read_mnist_like("FashionMNIST"), FASHION_NAMES, default_val_size=5000),
    "cifar10": DatasetInfo(_read_cifar10, CIFAR10_NAMES, default_val_size=5000),
    "synthetic": DatasetInfo(_read_synthetic, DIGIT_NAMES, default_val_size=0.2),
}


# ------------------------------------------------------------------------------------------ splits and stats
def _val_count(val_size: int | float, n_train: int) -> int:
    rule = f"`val_size` must be an int in [1, {n_train - 1}] or a float in (0, 1) of the {n_train} training images"
    if isinstance(val_size, bool) or not isinstance(val_size, Real):
        raise ValueError(f"{rule}, but got val_size={val_size!r}")
    if isinstance(val_size, Integral):
        count = int(val_size)
    elif 0 < val_size < 1:
        count = round(float(val_size) * n_train)
    else:
        raise ValueError(f"{rule}, but got val_size={val_size!r}")
    if not 1 <= count < n_train:
        raise ValueError(f"{rule}, but got val_size={val_size!r} ({count} images)")
    return count


def _channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 (N, C, H, W) images in [0, 1] units, without a float copy of all x."""
    total, squares = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for start in range(0, len(x), 1024):  # 1024 images at a time: bounded memory; sums in float64
        chunk = x[start:start + 1024].astype(np.float32)
        total += chunk.sum(axis=(0, 2, 3), dtype=np.float64)
        squares += np.square(chunk).sum(axis=(0, 2, 3), dtype=np.float64)
    n = x.size // x.shape[1]
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean**2, 0.0))
    return tuple(float(m) / 255 for m in mean), tuple(float(s) / 255 for s in std)


def load(name: str, *, data_dir: str | Path | None = None, val_size: int | float | None = None,
         val_pick: str = "first", seed: int = 0, subset: int | None = None, download: bool = True,
         image_shape: tuple[int, int, int] | None = None) -> Dataset:
    """Load data set `name` and split a validation set off its training images.

    val_size: a count, or a fraction in (0, 1) of the training images; None means the data set's default
        (5,000 for mnist, fashion_mnist and cifar10; 0.2 for digits and synthetic).
    val_pick: "first" takes the first val_size training images; "random" a subset drawn with `seed`.
    subset: keep only the first `subset` training images left after the validation split (smoke runs).
    download: fetch missing mnist / fashion_mnist / cifar10 files with torchvision, into a writable data dir.
    image_shape: (C, H, W) of the `synthetic` images only; default (1, 28, 28).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}")
    if val_pick not in VAL_PICKS:
        raise ValueError(f"unknown val_pick {val_pick!r}; valid values: {', '.join(VAL_PICKS)}")
    if image_shape is not None and name != "synthetic":
        raise ValueError(f"`image_shape` applies to the 'synthetic' data set only, but got it for {name!r}")
    if image_shape is not None and not (
            len(image_shape) == 3 and all(isinstance(s, Integral) and s >= 1 for s in image_shape)):
        raise ValueError(f"`image_shape` must be three positive ints (C, H, W), but got {image_shape!r}")
    info = DATASETS[name]
    checksum = Checksum()
    x_all, y_all, x_test, y_test = info.read(resolve_data_dir(data_dir), name=name, download=download,
                                             seed=seed, image_shape=image_shape, checksum=checksum)
    if not checksum.files:  # digits, synthetic: no files of ours, so the arrays are the fingerprint
        checksum.add_arrays((x_all, y_all, x_test, y_test))

    n_val = _val_count(info.default_val_size if val_size is None else val_size, len(x_all))
    if val_pick == "first":  # slices are views: no copy of the training images
        x_val, y_val, x_train, y_train = x_all[:n_val], y_all[:n_val], x_all[n_val:], y_all[n_val:]
    else:
        order = np.random.default_rng(seed).permutation(len(x_all))
        val, train = np.sort(order[:n_val]), np.sort(order[n_val:])  # sorted: each keeps the files' order
        x_val, y_val, x_train, y_train = x_all[val], y_all[val], x_all[train], y_all[train]
    if subset is not None:
        if isinstance(subset, bool) or not isinstance(subset, Integral) or not 1 <= subset <= len(x_train):
            raise ValueError(f"`subset` must be an int in [1, {len(x_train)}] (training images left after the "
                             f"validation split), but got {subset!r}")
        x_train, y_train = x_train[:subset], y_train[:subset]

    arrays = {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val,
              "x_test": x_test, "y_test": y_test}
    for array in arrays.values():
        array.setflags(write=False)  # as workers see them from Ray's object store: copy before writing
    mean, std = _channel_stats(x_train)
    return Dataset(name=name, classes=info.classes, mean=mean, std=std, sha256=checksum.hexdigest(), **arrays)
