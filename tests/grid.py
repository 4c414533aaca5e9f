"""The one test grid of the kernel tests: devices, dtypes, memory layouts, awkward sizes and the
per-dtype tolerance every kernel-versus-reference comparison uses.

Axes are plain tuples (``pytest.param`` entries carry their marks and ids); :func:`grid` turns
them into one ``pytest.mark.parametrize`` over their product, or over the union of several
products (the full grid on a few cases, one cheap corner on the rest: the interpreter is slow).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import torch

from hyperkern._shared import interpreting

#: Triton runs on CPU tensors only under its interpreter (tests/conftest.py sets it without CUDA)
INTERPRETING = interpreting()
HAS_CUDA = torch.cuda.is_available()
#: the device of tests that are not parametrised over :data:`DEVICES`
DEVICE = "cuda" if HAS_CUDA else "cpu"
DEVICES = (
    pytest.param(
        "cpu",
        marks=pytest.mark.skipif(not INTERPRETING, reason="CPU tensors need TRITON_INTERPRET=1"),
    ),
    pytest.param(
        "cuda",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")],
    ),
)
DTYPES = (torch.float64, torch.float32)
#: the ops compute these in float32; tests/test_half_and_limits.py runs every op and kernel on them
HALF_DTYPES = (torch.float16, torch.bfloat16)
#: the ``contiguous`` argument of :func:`make_layout`, one value or both
CONTIGUOUS = (pytest.param(True, id="contiguous"),)
STRIDED = (pytest.param(False, id="strided"),)
CONTIGUITY = CONTIGUOUS + STRIDED
#: 1, primes, a non-power of two, one past a 16-wide tile; prepend 0 where the op takes empties
AWKWARD_SIZES = (1, 3, 6, 13, 17)
SIZES_WITH_EMPTY = (0, *AWKWARD_SIZES)

#: (rtol, atol) of a result computed in that dtype, against a float64 reference
TOLERANCE: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-12, 1e-12),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (5e-3, 5e-3),
    torch.bfloat16: (2e-2, 2e-2),
}


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    dtype: torch.dtype | None = None,
    scale: float = 1.0,
    msg: str = "",
) -> None:
    """``actual`` equals ``expected`` (same shape) within ``TOLERANCE[dtype or actual.dtype]``,
    compared in float64. ``scale`` multiplies atol, which is for values of order one: pass
    ``magnitude(expected)`` where errors grow with the largest value (long sums)."""
    rtol, atol = TOLERANCE[dtype or actual.dtype]
    assert actual.shape == expected.shape, f"{msg}: shape {actual.shape} != {expected.shape}"
    torch.testing.assert_close(
        actual.detach().double().cpu(),
        expected.detach().double().cpu(),
        rtol=rtol,
        atol=atol * scale,
        msg=lambda m: f"{msg} ({dtype or actual.dtype}, rtol={rtol}, atol={atol * scale:g}): {m}",
    )


def magnitude(t: torch.Tensor) -> float:
    """``max(1, max |t|)``: the ``scale`` of :func:`assert_close` for ``t``'s values."""
    return max(1.0, t.detach().abs().max().item()) if t.numel() else 1.0


def make_layout(t: torch.Tensor, contiguous: bool) -> torch.Tensor:
    """``t`` itself, or (``contiguous=False``) a copy with the same values in a column-major
    buffer that skips every other element: not contiguous whenever ``t`` has two or more
    elements. The copy of a tensor that requires grad is a new leaf that requires grad."""
    if contiguous or t.dim() == 0:
        return t
    order = list(range(t.dim()))[::-1]
    buffer = t.new_empty([2 * t.shape[d] for d in order]).permute(order)
    out = buffer[(slice(None, None, 2),) * t.dim()]
    out.copy_(t.detach())
    return out.requires_grad_(t.requires_grad)


_ParameterSet = type(pytest.param(None))


def _id(value: Any) -> str:
    return str(value).removeprefix("torch.").replace(" ", "")


def grid(*products: Mapping[str, Sequence[Any]], **axes: Sequence[Any]) -> pytest.MarkDecorator:
    """``pytest.mark.parametrize`` over the product of ``axes`` (name -> values); with mappings
    as well, over the union of their products (same names, duplicates dropped), each times
    ``axes``. ``pytest.param`` values keep their marks and ids."""
    subgrids = [{**product, **axes} for product in products or ({},)]
    names = list(subgrids[0])
    params, seen = [], set()
    for subgrid in subgrids:
        assert list(subgrid) == names, f"every product needs the axes {names}"
        for combo in itertools.product(*(subgrid[n] for n in names)):
            sets = [v if isinstance(v, _ParameterSet) else pytest.param(v) for v in combo]
            values = tuple(s.values[0] for s in sets)
            ident = "-".join(s.id or _id(s.values[0]) for s in sets)
            if ident not in seen:
                seen.add(ident)
                marks = [m for s in sets for m in s.marks]
                params.append(pytest.param(*values, marks=marks, id=ident))
    return pytest.mark.parametrize(names, params)
