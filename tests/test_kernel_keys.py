"""Triton key and duplicate-mask kernels (kernels/keys.py) against the plain-torch reference.

Runs the kernels under TRITON_INTERPRET=1 on CPU (tests/conftest.py) or on CUDA when present.
"""

from __future__ import annotations

import pytest
import torch
from hyperkern.kernels.keys import tuple_keys
from hyperkern.reference import keys as ref
from hyperkern.reference.keys import INT64_MAX, cantor_fits, cantor_max, linear_fits
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperkern import library, ops
from tests.grid import CONTIGUITY, DEVICE, DEVICES, HAS_CUDA, SIZES_WITH_EMPTY, grid, make_layout


def cantor_keys(points):
    return tuple_keys(points, [1] * points.shape[-1], "cantor")


def linear_keys(points, dims):
    return tuple_keys(points, list(dims), "linear")


def duplicate_mask(points, dims, context_size=None, key_kind="auto"):
    """The op ``hyperkern::duplicate_mask`` on its Triton implementation."""
    return ops.duplicate_mask(points, dims, context_size, key_kind, backend="triton")


def _points(B, k, S, dims, seed, device=DEVICE, contiguous=True):
    """``(B, k, S, r)`` int64 tuples uniform over ``dims`` (small dims give many repeats), in a
    strided layout unless ``contiguous``."""
    g = torch.Generator().manual_seed(seed)
    cols = [torch.randint(0, d, (B, k, S), generator=g) for d in dims]
    return make_layout(torch.stack(cols, -1).to(device), contiguous)


def _exact_cantor(t: tuple[int, ...]) -> int:
    code = t[-1]
    for a in reversed(t[:-1]):
        code = (a + code) * (a + code + 1) // 2 + code
    return code


@grid(dims=[(1,), (7,), (5, 3), (13, 2, 7), (3, 3, 3, 3, 3)], contiguous=CONTIGUITY)
def test_keys_match_reference(dims, contiguous):
    points = _points(2, 5, 7, dims, seed=len(dims), contiguous=contiguous)
    assert torch.equal(cantor_keys(points), ref.cantor_keys(points))
    assert torch.equal(linear_keys(points, dims), ref.linear_keys(points, dims))


def test_cantor_keys_are_exact_near_the_int64_bound():
    dims = (2**31, 2**31)  # the largest code is just below 2**63
    assert cantor_fits(dims) and cantor_max(dims) > 2**62
    tuples = [(2**31 - 1, 2**31 - 1), (2**31 - 1, 2**31 - 2), (2**24 + 1, 2**24), (0, 2**31 - 1)]
    points = torch.tensor(tuples, dtype=torch.int64, device=DEVICE)
    want = torch.tensor([_exact_cantor(t) for t in tuples], dtype=torch.int64)
    assert torch.equal(cantor_keys(points).cpu(), want)
    assert int(want.max()) <= INT64_MAX


CASES = [  # (B, k, S, dims, context_size)
    (1, 1, 1, (3,), None),
    (3, 5, 7, (2, 3), None),
    (3, 5, 7, (2, 3), 2),
    (2, 7, 13, (5, 5, 2), 3),
    (1, 4, 6, (3, 2), 1),
    (2, 3, 5, (4, 4), 8),
]


@grid(
    case=[pytest.param(c, id="B{}-k{}-S{}-{}-cs{}".format(*c)) for c in CASES],
    kind=["auto", "cantor", "linear"],
    device=DEVICES,
)
def test_duplicate_mask_matches_reference(case, kind, device):
    B, k, S, dims, context_size = case
    points = _points(B, k, S, dims, seed=B * k * S, device=device)
    got = duplicate_mask(points, dims, context_size, kind)
    want = ref.duplicate_mask(points, dims, context_size, kind)
    assert got.dtype == torch.bool and got.shape == (B, k, S)
    assert torch.equal(got, want)


@grid(S=SIZES_WITH_EMPTY, context_size=[None, 2])
def test_awkward_context_lengths_strided(S, context_size):
    points = _points(2, 3, S, (3, 2), seed=S, contiguous=False)
    got = duplicate_mask(points, (3, 2), context_size)
    assert got.shape == (2, 3, S)
    assert torch.equal(got, ref.duplicate_mask(points, (3, 2), context_size))


def test_cantor_and_linear_keys_mask_the_same_tuples():
    dims = (6, 4, 3)
    points = _points(3, 6, 11, dims, seed=3)
    cantor = duplicate_mask(points, dims, 4, "cantor")
    assert cantor.any() and not cantor.all()
    assert torch.equal(cantor, duplicate_mask(points, dims, 4, "linear"))


@pytest.mark.parametrize("context_size", [None, 2])
def test_all_duplicate_contexts_keep_only_the_first_tuple(context_size):
    points = torch.full((2, 5, 3, 2), 4, dtype=torch.int64, device=DEVICE)
    mask = duplicate_mask(points, (7, 7), context_size)
    first = torch.zeros(2, 5, 3, dtype=torch.bool, device=DEVICE)
    starts = [0] if context_size is None else [0, 2, 4]
    first[:, starts, 0] = True
    assert torch.equal(mask, ~first)
    assert torch.equal(mask, ref.duplicate_mask(points, (7, 7), context_size))


def test_large_dims_fall_back_to_linear_keys():
    dims = (2**21, 2**21, 2**21)  # Cantor codes overflow int64, the linear index fits
    assert not cantor_fits(dims) and linear_fits(dims)
    points = _points(2, 3, 4, (5, 5, 5), seed=1)
    points[..., 0] += 2**21 - 5  # big coordinates in the first column
    points[1, 2] = points[1, 0]  # a repeat across means
    mask = duplicate_mask(points, dims)
    assert mask[1, 2].all()
    assert torch.equal(mask, ref.duplicate_mask(points, dims, key_kind="linear"))
    with pytest.raises(ValueError, match="Cantor keys for dims"):
        duplicate_mask(points, dims, key_kind="cantor")
    with pytest.raises(ValueError, match="too many for int64"):
        duplicate_mask(points, (2**32, 2**32, 2**32), key_kind="auto")


@pytest.mark.parametrize("shape", [(0, 3, 4), (2, 0, 4), (2, 3, 0)])
def test_empty_inputs_give_empty_masks(shape):
    points = torch.zeros(*shape, 2, dtype=torch.int64, device=DEVICE)
    mask = duplicate_mask(points, (3, 3), context_size=2)
    assert mask.shape == shape and mask.dtype == torch.bool


def test_runs_are_bitwise_equal():
    points = _points(3, 7, 13, (3, 4), seed=2)
    assert torch.equal(duplicate_mask(points, (3, 4), 3), duplicate_mask(points, (3, 4), 3))


@pytest.mark.parametrize(
    ("args", "error", "name"),
    [
        ((torch.zeros(1, 2, 3, 2), (3, 3)), TypeError, "points"),
        ((torch.zeros(2, 3, 2, dtype=torch.int64), (3, 3)), ValueError, "points"),
        ((torch.zeros(1, 2, 3, 2, dtype=torch.int64), (3, 3, 3)), ValueError, "dims"),
        ((torch.zeros(1, 2, 3, 2, dtype=torch.int64), (3, 3), 0), ValueError, "context_size"),
        ((torch.zeros(1, 2, 3, 2, dtype=torch.int64), (3, 3), None, "hash"), ValueError, "kind"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(args, error, name):
    args = tuple(a.to(DEVICE) if isinstance(a, torch.Tensor) else a for a in args)
    with pytest.raises(error, match=name):
        duplicate_mask(*args)


def test_opcheck_custom_ops():
    points = _points(2, 3, 4, (3, 2), seed=4)
    keys = ref.cantor_keys(points)
    torch.library.opcheck(library.duplicate_mask, (keys, 2, True))


def test_compiles_without_graph_breaks():
    points = _points(2, 3, 4, (3, 2), seed=5)
    compiled = torch.compile(
        lambda p: duplicate_mask(p, (3, 2), 2), fullgraph=True, backend="aot_eager"
    )
    assert torch.equal(compiled(points), ref.duplicate_mask(points, (3, 2), 2))


@settings(max_examples=10, deadline=None)
@given(
    B=st.integers(1, 3),
    k=st.integers(1, 6),
    S=st.integers(1, 9),
    dims=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    context_size=st.one_of(st.none(), st.integers(1, 7)),
    kind=st.sampled_from(["auto", "cantor", "linear"]),
    seed=st.integers(0, 2**16),
    contiguous=st.booleans(),
)
def test_random_shapes_match_reference(B, k, S, dims, context_size, kind, seed, contiguous):
    points = _points(B, k, S, dims, seed, contiguous=contiguous)
    got = duplicate_mask(points, dims, context_size, kind)
    assert torch.equal(got, ref.duplicate_mask(points, dims, context_size, kind))


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (the interpreter covers CPU above)")
@pytest.mark.parametrize("context_size", [None, 7])
def test_cuda_larger_sizes(context_size):
    dims = (31, 17, 5)
    points = _points(8, 64, 12, dims, seed=6)
    for kind in ("cantor", "linear"):
        want = ref.duplicate_mask(points, dims, context_size, kind)
        assert torch.equal(duplicate_mask(points, dims, context_size, kind), want)
