"""The data on a trial's device: the data set's uint8 images shared rather than copied, and their normalisation,
applied batch by batch on the device (raysweep.train's loop takes its batches from here).

On the CPU the tensors are views of the arrays Ray's object store hands out (zero-copy); on a GPU there is one uint8
copy per (data set, device), which every seed of a trial shares. No float copy of a whole split is made: with four
trials of CIFAR-10 packed on one GPU, that copy was 4 x 0.6 GB.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from raysweep.data import Dataset

__all__ = ["DeviceData", "Normalize", "batch_inputs", "shared_tensors", "to_tensors"]


@dataclass(frozen=True)
class Normalize:
    """(x / 255 - mean) / std per channel, fused into one op: x * scale + shift, uint8 (B, C, H, W) -> float32.

    It rounds differently from the three-step form by a few float32 ulps; every path (training, validation, the test
    split, the logged model's input example) uses this one, so they agree with each other bit for bit.
    """

    scale: torch.Tensor  # (1, C, 1, 1) float32: 1 / (255 std)
    shift: torch.Tensor  # (1, C, 1, 1) float32: -mean / std

    @classmethod
    def of(cls, data: Dataset, *, device: torch.device | str) -> Normalize:
        """The data set's training statistics (pixel units in [0, 1]), on `device`."""
        mean, std = np.asarray(data.mean, np.float64), np.asarray(data.std, np.float64)  # float64: round once, below
        as_tensor = lambda v: torch.tensor(v, dtype=torch.float32, device=device).view(1, -1, 1, 1)  # noqa: E731
        return cls(scale=as_tensor(1.0 / (255.0 * std)), shift=as_tensor(-mean / std))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, images, self.scale)  # type promotion: uint8 x float32 -> float32


@dataclass(frozen=True)
class DeviceData:
    """uint8 images (N, C, H, W) and int64 labels on one device, and the normalisation each batch gets there.

    `normalize` None means the images are already normalised floats (tests and benchmarks build such data by hand).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int
    normalize: Normalize | None = None

    @classmethod
    def from_arrays(cls, data: Dataset, *, device: torch.device | str) -> DeviceData:
        """The data set's train and val splits on `device`, shared: built once per (data set, device) and cached while
        the data set object lives, so the seeds of one trial (raysweep.seeds) use one copy on a GPU."""
        device = torch.device(device)
        cached = _DEVICE_DATA.setdefault(data, {})
        if device not in cached:
            cached[device] = cls(*shared_tensors(data.x_train, data.y_train, device=device),
                                 *shared_tensors(data.x_val, data.y_val, device=device), data.num_classes,
                                 Normalize.of(data, device=device))
        return cached[device]


# Keyed weakly by the Dataset: a trial's data set dies with the trial (Ray deserialises a new one per trial), and its
# device tensors with it. The tensors hold the numpy arrays, never the Dataset, so an entry cannot keep its own key.
_DEVICE_DATA: weakref.WeakKeyDictionary[Dataset, dict[torch.device, DeviceData]] = weakref.WeakKeyDictionary()


def shared_tensors(x: np.ndarray, y: np.ndarray, *, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, C, H, W) and int64 labels as tensors: on the CPU views of the arrays (no copy), on a GPU one
    copy each. Normalise batches of the images with Normalize."""
    with warnings.catch_warnings():
        # The object store's arrays are read-only and torch has no read-only tensors, so it warns that writing would be
        # undefined. Nothing writes to these tensors: every batch is a new tensor made by index_select or Normalize.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
        images = torch.as_tensor(x, device=device)
        labels = torch.as_tensor(y, device=device)
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (N, C, H, W), as raysweep.data loads them, but got {images.dtype}")
    return images, labels.long()  # long(): no copy when the labels already are int64, as data.load returns them


def to_tensors(data: Dataset, x: np.ndarray, y: np.ndarray, *, device: torch.device | str) -> tuple[torch.Tensor, ...]:
    """uint8 images (N, C, H, W) -> float tensors normalised by the data set's training statistics; labels -> int64.

    A float copy of all of `x`: for a few images (a model's input example). Whole splits go through shared_tensors
    and evaluate(..., normalize=Normalize.of(data, device=...)), which normalises batch by batch.
    """
    images, labels = shared_tensors(x, y, device=device)
    return Normalize.of(data, device=device)(images), labels


def batch_inputs(images: torch.Tensor, normalize: Normalize | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """What turns a batch of `images` into model inputs: `normalize`, or nothing for images already normalised."""
    if normalize is not None:
        return normalize
    if not images.is_floating_point():
        raise ValueError(f"`normalize` must be given for {images.dtype} images; only float images are used as they are")
    return lambda batch: batch
