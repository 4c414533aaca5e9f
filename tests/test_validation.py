"""Every bad input gets a clear error naming the argument."""

import pytest
import torch

from hyperkern import SparseLayer, SparseLinear, ops, sparse_layer


def _args(b=2, k=3, r=2, n_in=5):
    return (torch.randn(b, n_in), torch.randn(k, r), torch.randn(k), torch.randn(k), (4,))


def test_valid_arguments_pass():
    assert sparse_layer(*_args()).shape == (2, 4)


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda a: (torch.randn(5), *a[1:]), ValueError, "x must have"),
        (lambda a: (a[0].long(), *a[1:]), TypeError, "x must be a floating"),
        (lambda a: ([1.0], *a[1:]), TypeError, "x must be a torch.Tensor"),
        (
            lambda a: (a[0], torch.randn(3, 3), *a[2:]),
            ValueError,
            r"means must have shape \(k, r\)",
        ),
        (lambda a: (a[0], torch.randn(3), *a[2:]), ValueError, "means must have 2 or 3"),
        (
            lambda a: (a[0], torch.randn(7, 3, 2), torch.randn(7, 3), torch.randn(7, 3), a[4]),
            ValueError,
            r"means must have shape \(b, k, r\)",
        ),
        (
            lambda a: (a[0], torch.randn(0, 2), torch.randn(0), torch.randn(0), a[4]),
            ValueError,
            "k >= 1",
        ),
        (lambda a: (*a[:2], torch.randn(4), *a[3:]), ValueError, r"sigmas must have shape \(k,\)"),
        (lambda a: (*a[:3], torch.randn(2), a[4]), ValueError, r"values must have shape \(k,\)"),
        (lambda a: (a[0], a[1].double(), *a[2:]), TypeError, "one floating dtype"),
        (lambda a: (*a[:4], (0,)), ValueError, "out_shape"),
        (lambda a: (*a[:4], "abc"), ValueError, "out_shape"),
        (
            lambda a: (a[0], a[1].clone().fill_(float("nan")), *a[2:]),
            ValueError,
            "means contains NaN",
        ),
        (
            lambda a: (*a[:2], torch.full((3,), float("inf")), *a[3:]),
            ValueError,
            "sigmas contains NaN",
        ),
        (
            lambda a: (*a[:3], torch.tensor([1.0, float("nan"), 0]), a[4]),
            ValueError,
            "values contains",
        ),
    ],
)
def test_bad_arguments(change, error, match):
    with pytest.raises(error, match=match):
        sparse_layer(*change(_args()), validate=True)  # the finiteness checks are opt-in


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(region=(5, 2)), ValueError, r"region\[0\]=5 is larger"),
        (dict(region=(2,)), ValueError, "one size per dimension"),
        (dict(region=(0, 1)), ValueError, "positive"),
        (dict(n_local=-1), ValueError, "n_local"),
        (dict(n_global=1.5), ValueError, "n_global"),
        (dict(context_size=0), ValueError, "context_size"),
        (dict(chunk_size=0), ValueError, "chunk_size"),
        (dict(sigma_scale=0.0), ValueError, "sigma_scale"),
        (dict(min_sigma=-1.0), ValueError, "min_sigma"),
        (dict(generator="seed"), TypeError, "generator"),
        (dict(backend="cuda"), ValueError, "backend"),
    ],
)
def test_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        sparse_layer(*_args(), **kwargs)


def test_index_space_too_large_for_int64():
    x = torch.randn(2, 8)
    with pytest.raises(ValueError, match="too large for int64"):
        sparse_layer(x, torch.randn(1, 3), torch.randn(1), torch.randn(1), (2**40, 2**40))


def test_device_mismatch_is_named():
    meta = torch.randn(3, 2, device="meta")
    with pytest.raises(ValueError, match="one device"):
        sparse_layer(torch.randn(2, 5), meta, torch.randn(3), torch.randn(3), (4,))


def test_module_constructor_errors():
    with pytest.raises(ValueError, match="k must be"):
        SparseLayer((4,), (4,), 0)
    with pytest.raises(ValueError, match="in_shape"):
        SparseLayer((0,), (4,), 2)
    with pytest.raises(ValueError, match="in_features=4"):
        SparseLinear(4, 3, 2)(torch.randn(2, 5))


def test_ops_shape_errors():
    pts = torch.zeros(1, 2, 3, 2, dtype=torch.long)
    with pytest.raises(TypeError, match="points must be int64"):
        ops.duplicate_mask(pts.int(), (3, 3))
    with pytest.raises(ValueError, match=r"sigma must have shape \(B, k, r\)"):
        ops.proportions(
            pts,
            torch.zeros(1, 2, 2),
            torch.ones(1, 2, 3),
            torch.zeros(1, 2),
            torch.zeros(1, 2, 3, dtype=torch.bool),
        )
    with pytest.raises(ValueError, match="rows must lie"):
        ops.contract(
            torch.tensor([[5]]),
            torch.tensor([[0]]),
            torch.ones(1, 1),
            torch.randn(2, 3),
            2,
            validate=True,
        )
    with pytest.raises(ValueError, match=r"B = 1 \(shared W\) or B = x.shape"):
        ops.contract(
            torch.zeros(3, 1, dtype=torch.long),
            torch.zeros(3, 1, dtype=torch.long),
            torch.ones(3, 1),
            torch.randn(2, 3),
            2,
        )
