"""Cluttered MNIST generator: determinism, prefix property, placement, clipping, cache."""

import numpy as np
import pytest

from bench.experiments.data.cluttered import default_cache_dir, generate_cluttered, load_cluttered


def _digits(m: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(m, 28, 28), dtype=np.uint8), np.arange(m)


def test_same_seed_same_images_other_seed_differs():
    digits, labels = _digits(7)
    a = generate_cluttered(digits, labels, 13, seed=3, canvas=40)
    b = generate_cluttered(digits, labels, 13, seed=3, canvas=40)
    c = generate_cluttered(digits, labels, 13, seed=4, canvas=40)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_smaller_n_is_a_prefix_across_blocks():
    digits, labels = _digits(5)
    big, big_labels = generate_cluttered(digits, labels, 1003, seed=1, canvas=30, n_distractors=2)
    small, small_labels = generate_cluttered(
        digits, labels, 1001, seed=1, canvas=30, n_distractors=2
    )
    assert np.array_equal(big[:1001], small) and np.array_equal(big_labels[:1001], small_labels)


def test_digit_placed_whole_without_distractors():
    digits, labels = _digits(4)
    images, out_labels = generate_cluttered(digits, labels, 6, seed=2, canvas=37, n_distractors=0)
    assert images.shape == (6, 37, 37) and images.dtype == np.uint8
    assert out_labels.dtype == np.int64
    for image, label in zip(images, out_labels, strict=True):
        digit = digits[label]
        hits = [
            (y, x)
            for y in range(37 - 27)
            for x in range(37 - 27)
            if np.array_equal(image[y : y + 28, x : x + 28], digit)
            and int(image.sum(dtype=np.int64)) == int(digit.sum(dtype=np.int64))
        ]
        assert hits, "the digit must appear whole, the rest of the canvas black"


def test_digits_walk_a_permutation():
    digits, labels = _digits(9)
    _, out = generate_cluttered(digits, labels, 18, seed=5, canvas=28, n_distractors=0)
    assert sorted(out[:9].tolist()) == list(range(9)) and sorted(out[9:].tolist()) == list(range(9))


def test_distractor_mass_and_clipping():
    ones = np.ones((3, 28, 28), dtype=np.uint8)
    images, _ = generate_cluttered(ones, np.zeros(3), 5, seed=0, canvas=50, n_distractors=8)
    assert (images.reshape(5, -1).sum(1) == 8 * 64 + 784).all()  # no clipping at these values
    full = np.full((3, 28, 28), 200, dtype=np.uint8)
    clipped, _ = generate_cluttered(full, np.zeros(3), 5, seed=0, canvas=30, n_distractors=8)
    assert clipped.max() == 255 and set(np.unique(clipped).tolist()) <= {0, 200, 255}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(digits=np.zeros((2, 27, 28), np.uint8)), "digits"),
        (dict(digits=np.zeros((2, 28, 28), np.float32)), "digits"),
        (dict(labels=np.zeros(3)), "labels"),
        (dict(n=-1), "n must"),
        (dict(canvas=20), "canvas"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = dict(digits=np.zeros((2, 28, 28), np.uint8), labels=np.zeros(2), n=3, seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        generate_cluttered(**args)


def test_load_caches_and_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERKERN_CACHE", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    images, labels = load_cluttered("test", n=20, seed=0, cache_dir=tmp_path)
    assert images.shape == (20, 100, 100) and labels.shape == (20,)
    assert 0 <= int(labels.min()) and int(labels.max()) <= 9
    cached = list(tmp_path.glob("*.npz"))
    assert len(cached) == 1
    again, again_labels = load_cluttered("test", n=20, seed=0, cache_dir=tmp_path)
    assert (again == images).all() and (again_labels == labels).all()
    with pytest.raises(ValueError, match="split"):
        load_cluttered("valid", n=2, cache_dir=tmp_path)
