"""What the Triton kernels and the plain-torch reference both need: index arithmetic, key
bounds, context geometry, the counter-based random stream's constants. No tensor is built here
from a Python list, so nothing in here syncs the host."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence

import torch

INT64_MAX = 2**63 - 1
MAX_DIM = 2**31 - 1  # per-column size limit: u32 * dim must fit int64 when sampling
# Smallest per-column variance (index units^2, a standard deviation of 0.01): the width
# transform's softplus underflows to 0 for very negative raw widths, and 0/0 would follow.
VARIANCE_FLOOR = 1e-4
HALF_DTYPES = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the ops compute in: float32 for float16/bfloat16 (fp32 accumulation and
    index math), the dtype itself otherwise."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


def half_as_float32(fn: Callable) -> Callable:
    """Run a launcher with float16/bfloat16 tensor arguments as float32 and give its floating
    results back in that half dtype (float32 accumulation and index math for half inputs)."""

    @functools.wraps(fn)
    def launcher(*args, **options):
        half = next((a.dtype for a in args if _is_half(a)), None)
        if half is None:
            return fn(*args, **options)
        out = fn(*(a.float() if _is_half(a) else a for a in args), **options)
        if isinstance(out, torch.Tensor):
            return out.to(half)
        return tuple(t.to(half) if _is_float(t) else t for t in out)

    return launcher


def _is_float(a: object) -> bool:
    return isinstance(a, torch.Tensor) and a.is_floating_point()


def _is_half(a: object) -> bool:
    return isinstance(a, torch.Tensor) and a.dtype in HALF_DTYPES


# Philox 4x32-10 (Salmon et al. 2011), the generator of torch's CUDA RNG and of tl.randint.
PHILOX_ROUNDS = 10
PHILOX_KEY_A = 0x9E3779B9
PHILOX_KEY_B = 0xBB67AE85
PHILOX_ROUND_A = 0xD2511F53
PHILOX_ROUND_B = 0xCD9E8D57


_CONSTANTS: dict[tuple, torch.Tensor] = {}


def constant(
    values: Sequence[int], device: torch.device, dtype: torch.dtype = torch.int64
) -> torch.Tensor:
    """``values`` as a ``(len(values),)`` tensor on ``device``, built once per (values, device,
    dtype) and cached: a tensor from a Python list is a blocking host-to-device copy on CUDA, so
    the hot path must not build one per call. While ``torch.compile`` traces, the tensor is
    built in the graph and not cached: a traced write to the cache is a side effect, which
    ``torch.utils.checkpoint`` regions cannot hold."""
    key = (tuple(int(v) for v in values), torch.device(device), dtype)
    if torch.compiler.is_compiling():
        return torch.tensor(key[0], dtype=dtype, device=device)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = torch.tensor(key[0], dtype=dtype, device=device)
    return _CONSTANTS[key]


def interpreting() -> bool:
    """Whether Triton runs under its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def row_major_strides(shape: Sequence[int]) -> list[int]:
    """Row-major strides of ``shape``: ``[prod(shape[d+1:]) for d]``."""
    return [math.prod(shape[d + 1 :]) for d in range(len(shape))]


def cantor_pair_int(a: int, b: int) -> int:
    return (a + b) * (a + b + 1) // 2 + b


def cantor_max(dims: Sequence[int]) -> int:
    """Largest nested Cantor code over ``dims`` (the code grows in every argument)."""
    code = dims[-1] - 1
    for d in reversed(dims[:-1]):
        code = cantor_pair_int(d - 1, code)
    return code


def cantor_fits(dims: Sequence[int]) -> bool:
    """Whether every nested Cantor code over ``dims`` fits in int64."""
    return cantor_max(dims) <= INT64_MAX


def linear_fits(dims: Sequence[int]) -> bool:
    """Whether every row-major linear index over ``dims`` fits in int64."""
    return math.prod(dims) - 1 <= INT64_MAX


def resolve_key_kind(dims: Sequence[int], kind: str = "auto") -> str:
    """``"cantor"`` or ``"linear"`` for ``kind`` over ``dims``.

    ``"auto"`` takes the Cantor code where it fits int64 and the linear index otherwise.
    Raises ``ValueError`` when the chosen key cannot fit int64.
    """
    if kind == "auto":
        kind = "cantor" if cantor_fits(dims) else "linear"
    if kind == "cantor":
        if not cantor_fits(dims):
            raise ValueError(f"Cantor keys for dims={tuple(dims)} exceed int64")
        return kind
    if kind == "linear":
        if not linear_fits(dims):
            raise ValueError(
                f"index space dims={tuple(dims)} has {math.prod(dims)} tuples, too many for int64"
            )
        return kind
    raise ValueError(f"key kind must be 'auto', 'cantor' or 'linear', got {kind!r}")


def context_count(k: int, context_size: int | None) -> tuple[int, int]:
    """``(contexts per instance, means per context)``; ``None`` means one context of ``k``."""
    if context_size is not None and context_size < 1:
        raise ValueError(f"context_size must be None or >= 1, got {context_size}")
    size = max(k if context_size is None else min(context_size, k), 1)
    return -(-k // size), size


def default_region(dims: Sequence[int]) -> tuple[int, ...]:
    """Per-column local box size when none is given: ``max(2, ceil(log2 d))``, at most ``d``."""
    return tuple(min(d, max(2, math.ceil(math.log2(max(d, 1))))) for d in dims)


def samples_per_mean(r: int, n_local: int, n_global: int) -> int:
    """``S = 2**r + n_local + n_global``."""
    return 2**r + n_local + n_global


def to_contexts(t: torch.Tensor, context_size: int | None, pad_value: float = 0) -> torch.Tensor:
    """``(B, k, ...)`` -> ``(B * n_ctx, cs, ...)``, padding ``k`` up to ``n_ctx * cs``."""
    B, k = t.shape[:2]
    n_ctx, cs = context_count(k, context_size)
    pad = n_ctx * cs - k
    if pad:
        filler = t.new_full((B, pad, *t.shape[2:]), pad_value)
        t = torch.cat([t, filler], dim=1)
    return t.reshape(B * n_ctx, cs, *t.shape[2:])


def from_contexts(t: torch.Tensor, B: int, k: int) -> torch.Tensor:
    """Inverse of :func:`to_contexts`: ``(B * n_ctx, cs, ...)`` -> ``(B, k, ...)``."""
    if B == 0:
        return t.new_empty((0, k, *t.shape[2:]))
    return t.reshape(B, (t.shape[0] // B) * t.shape[1], *t.shape[2:])[:, :k]
