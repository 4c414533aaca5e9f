"""Cluttered MNIST (100x100), a port of DeepMind's ``mnist-cluttered`` generator.

Recipe: a black ``canvas x canvas`` image; first ``n_distractors`` 8x8 windows, each cut at a
uniformly random top-left in ``0..20`` from a random image of the same MNIST split (uniform, with
replacement) and added at a uniformly random top-left in ``0..canvas-8``; then the whole 28x28 digit
at a uniformly random top-left in ``0..canvas-28``. Sums are clipped at 1 (pixels are nonnegative,
so clipping once at the end equals clipping after every addition). Digits walk a random permutation
of the split (a fresh permutation each time it is exhausted). The clutter of each block of 1000
images has its own random stream, so the first ``n`` images of a larger set equal the set generated
with ``n``: reduced runs use a prefix of the paper-size data.

Images are stored as uint8 (value = pixel * 255, clipped at 255); divide by 255 for ``[0, 1]``.
Generation is deterministic from ``seed`` (numpy PCG64) and cached as ``.npz`` under
``cache_dir`` (default ``$HYPERKERN_CACHE`` or ``~/.cache/hyperkern``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from bench.experiments.data.mnist import load_mnist

__all__ = ["generate_cluttered", "load_cluttered", "default_cache_dir"]

_FORMAT_VERSION = 2
_DIGIT = 28
_WINDOW = 8
_BLOCK = 1000  # images per random stream, so that a smaller n gives a prefix
_SPLIT_SIZES = {"train": 60_000, "test": 10_000}


def default_cache_dir() -> Path:
    """``$HYPERKERN_CACHE`` if set, else ``~/.cache/hyperkern``."""
    env = os.environ.get("HYPERKERN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "hyperkern"


def generate_cluttered(
    digits: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    n: int,
    seed: int | Sequence[int],
    canvas: int = 100,
    n_distractors: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n`` cluttered images from one MNIST split.

    Args:
        digits: uint8 ``(m, 28, 28)`` source images (digits and distractors come from these).
        labels: int ``(m,)`` their classes.
        n: number of images to generate (may exceed ``m``: the permutation is then redrawn).
        seed: integer seed (or a sequence of ints, as numpy's ``SeedSequence`` takes); the
            same inputs and seed give the same images.
        canvas: side of the square output image (at least 28).
        n_distractors: number of 8x8 clutter windows per image.

    Returns:
        ``images`` uint8 ``(n, canvas, canvas)`` and ``labels`` int64 ``(n,)``.
    """
    digits = np.asarray(digits)
    labels = np.asarray(labels)
    if digits.ndim != 3 or digits.shape[1:] != (_DIGIT, _DIGIT) or digits.dtype != np.uint8:
        raise ValueError(f"digits must be uint8 (m, 28, 28), got {digits.dtype} {digits.shape}")
    if labels.shape != (digits.shape[0],):
        raise ValueError(f"labels must have shape ({digits.shape[0]},), got {labels.shape}")
    if digits.shape[0] == 0:
        raise ValueError("digits must hold at least one image")
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a nonnegative int, got {n!r}")
    if canvas < _DIGIT:
        raise ValueError(f"canvas must be at least {_DIGIT}, got {canvas}")
    if n_distractors < 0:
        raise ValueError(f"n_distractors must be nonnegative, got {n_distractors}")

    m = digits.shape[0]
    n_blocks = -(-n // _BLOCK)
    streams = [
        np.random.Generator(np.random.PCG64(s))
        for s in np.random.SeedSequence(seed).spawn(1 + n_blocks)
    ]
    order = np.concatenate([streams[0].permutation(m) for _ in range(max(1, -(-n // m)))])[:n]
    images = np.zeros((n, canvas, canvas), dtype=np.uint8)
    scratch = np.zeros((canvas, canvas), dtype=np.uint16)
    for block in range(n_blocks):
        rng = streams[1 + block]
        sources = rng.integers(0, m, size=(_BLOCK, n_distractors))
        crops = rng.integers(0, _DIGIT - _WINDOW + 1, size=(_BLOCK, n_distractors, 2))
        spots = rng.integers(0, canvas - _WINDOW + 1, size=(_BLOCK, n_distractors, 2))
        digit_spots = rng.integers(0, canvas - _DIGIT + 1, size=(_BLOCK, 2))
        for j in range(min(_BLOCK, n - block * _BLOCK)):
            scratch.fill(0)
            for d in range(n_distractors):
                cy, cx = crops[j, d]
                py, px = spots[j, d]
                window = digits[sources[j, d], cy : cy + _WINDOW, cx : cx + _WINDOW]
                scratch[py : py + _WINDOW, px : px + _WINDOW] += window
            dy, dx = digit_spots[j]
            scratch[dy : dy + _DIGIT, dx : dx + _DIGIT] += digits[order[block * _BLOCK + j]]
            np.minimum(scratch, 255, out=images[block * _BLOCK + j], casting="unsafe")
    return images, labels[order].astype(np.int64)


def load_cluttered(
    split: str = "train",
    n: int | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    canvas: int = 100,
    n_distractors: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluttered MNIST for one split, generated once and cached.

    Args:
        split: ``"train"`` (digits and clutter from MNIST's 60k training images) or ``"test"``
            (from the 10k test images).
        n: number of images (default: the split's size, 60 000 or 10 000, as in the paper).
        seed: generation seed; train and test use different streams for the same seed.
        cache_dir: folder for the ``.npz`` cache (default :func:`default_cache_dir`).
        canvas, n_distractors: see :func:`generate_cluttered`.

    Returns:
        ``images`` uint8 ``(n, canvas, canvas)`` (pixel * 255) and ``labels`` int64 ``(n,)``.
    """
    if split not in _SPLIT_SIZES:
        raise ValueError(f"split must be one of {tuple(_SPLIT_SIZES)}, got {split!r}")
    n = _SPLIT_SIZES[split] if n is None else n
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = f"cluttered-v{_FORMAT_VERSION}-{split}-n{n}-s{seed}-c{canvas}-d{n_distractors}.npz"
    path = cache / name
    if path.exists():
        with np.load(path) as data:
            return torch.from_numpy(data["images"]), torch.from_numpy(data["labels"])
    digits, digit_labels = load_mnist(split)
    split_seed = [seed, 0 if split == "train" else 1]
    images, labels = generate_cluttered(
        digits.numpy(), digit_labels.numpy(), n, split_seed, canvas, n_distractors
    )
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, images=images, labels=labels)
    os.replace(tmp, path)
    return torch.from_numpy(images), torch.from_numpy(labels)
