"""What a user would otherwise pick: each peer has the signature of the hyperkern op it replaces.

- :func:`dense_proportions`: the original paper code's algorithm, the full ``(points, means)``
  density matrix in plain probability space, masked, normalised per mean.
- :func:`unique_duplicate_mask`: duplicates found with ``torch.unique(dim=0)``.
- :func:`coo_contract`, :func:`csr_contract`: ``torch.sparse.mm`` on a COO / CSR matrix built from
  the nonzeros (per-instance Ws become one block-diagonal matrix, as in the original code).
- :func:`index_add_contract`: gather ``x``, scale, ``index_add`` into ``y``.
- :func:`layer_pipeline`: the whole sparse layer assembled from any of the above.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest
import torch

from hyperkern import reference

EPSILON = 1e-7  # the original code's guard against division by a zero variance


def dense_proportions(
    points, mu, sigma, values, duplicates, context_size=None, chunk_size=None
) -> torch.Tensor:
    """The original code's proportions: ``(B, k, S, r)`` points -> ``v' (B, k, S)``.

    Builds the ``(C, P, m)`` densities ``exp(-0.5 |(p - mu) / sqrt(sigma)|^2)`` in probability
    space (no log-sum-exp), zeroes masked points, divides by the per-mean sum and sums the values.
    ``chunk_size`` is not supported (the original code's chunking is a different algorithm).
    """
    if chunk_size is not None:
        raise ValueError("dense_proportions has no chunked path; pass chunk_size=None")
    B, k, S, r = points.shape
    pts = reference.to_contexts(points.to(mu.dtype), context_size)  # (C, cs, S, r)
    C, cs = pts.shape[:2]
    pts = pts.reshape(C, cs * S, r)
    mu_c = reference.to_contexts(mu, context_size)
    sigma_c = reference.to_contexts(sigma, context_size, pad_value=1.0)
    values_c = reference.to_contexts(values, context_size)
    dup_c = reference.to_contexts(duplicates, context_size, pad_value=True).reshape(C, cs * S)
    scaled = (pts.unsqueeze(2) - mu_c.unsqueeze(1)) * torch.rsqrt(EPSILON + sigma_c).unsqueeze(1)
    dens = torch.exp(-0.5 * (scaled * scaled).sum(-1))  # (C, P, m)
    dens = dens.masked_fill(dup_c.unsqueeze(-1), 0.0)
    props = dens / dens.sum(dim=1, keepdim=True)
    out = (props * values_c.unsqueeze(1)).sum(-1)
    return reference.from_contexts(out.reshape(C, cs, S), B, k)


def unique_duplicate_mask(points, dims, context_size=None, key_kind="auto") -> torch.Tensor:
    """``(B, k, S, r)`` tuples -> ``(B, k, S)`` bool via ``torch.unique`` over (context, key)."""
    keys = reference.tuple_keys(points, dims, key_kind)
    B, k, S = keys.shape
    ctx = reference.to_contexts(keys, context_size, pad_value=-1)
    C, cs = ctx.shape[:2]
    flat = ctx.reshape(-1)
    context_id = torch.arange(C, device=keys.device).repeat_interleave(cs * S)
    _, inverse = torch.unique(torch.stack([context_id, flat], 1), dim=0, return_inverse=True)
    position = torch.arange(flat.numel(), device=keys.device)
    first = torch.full(
        (int(inverse.max()) + 1 if flat.numel() else 0,),
        flat.numel(),
        device=keys.device,
        dtype=torch.int64,
    )
    first = first.scatter_reduce(0, inverse, position, reduce="amin")
    repeat = (position != first[inverse]).reshape(C, cs, S)
    return reference.from_contexts(repeat, B, k)


def _batched_indices(
    rows: torch.Tensor, cols: torch.Tensor, vprime: torch.Tensor, b: int, n_out: int, n_in: int
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Nonzeros as one sparse matrix: ``(n_out, n_in)`` if shared, else block-diagonal."""
    if rows.shape[0] == 1:
        return torch.stack([rows[0], cols[0]]), vprime[0], (n_out, n_in)
    offset = torch.arange(rows.shape[0], device=rows.device).unsqueeze(1)
    index = torch.stack([(rows + offset * n_out).reshape(-1), (cols + offset * n_in).reshape(-1)])
    return index, vprime.reshape(-1), (b * n_out, b * n_in)


def _sparse_contract(
    rows: torch.Tensor,
    cols: torch.Tensor,
    vprime: torch.Tensor,
    x: torch.Tensor,
    n_out: int,
    layout: str,
) -> torch.Tensor:
    b, n_in = x.shape
    index, vals, shape = _batched_indices(rows, cols, vprime, b, n_out, n_in)
    W = torch.sparse_coo_tensor(index, vals, shape, check_invariants=False)
    if layout == "csr":
        W = W.coalesce().to_sparse_csr()
    if rows.shape[0] == 1:
        return torch.sparse.mm(W, x.T).T  # Y = W X with X = x^T (n_in, b)
    return torch.sparse.mm(W, x.reshape(b * n_in, 1)).reshape(b, n_out)


def coo_contract(
    rows: torch.Tensor, cols: torch.Tensor, vprime: torch.Tensor, x: torch.Tensor, n_out: int
) -> torch.Tensor:
    """``torch.sparse.mm`` on a COO W built from ``(B, P)`` nonzeros.

    ``x (b, n_in)`` -> ``(b, n_out)``.
    """
    return _sparse_contract(rows, cols, vprime, x, n_out, "coo")


def csr_contract(
    rows: torch.Tensor, cols: torch.Tensor, vprime: torch.Tensor, x: torch.Tensor, n_out: int
) -> torch.Tensor:
    """As :func:`coo_contract`, converted to CSR (coalesce + ``to_sparse_csr``) before the mm."""
    return _sparse_contract(rows, cols, vprime, x, n_out, "csr")


def index_add_contract(
    rows: torch.Tensor, cols: torch.Tensor, vprime: torch.Tensor, x: torch.Tensor, n_out: int
) -> torch.Tensor:
    """Gather ``x[:, cols]``, scale by ``v'``, ``index_add`` into ``y``.

    ``x (b, n_in)`` -> ``(b, n_out)``.
    """
    b, n_in = x.shape
    out_dtype = torch.promote_types(x.dtype, vprime.dtype)
    if rows.shape[0] == 1:
        contrib = (x[:, cols[0]] * vprime).to(out_dtype)  # (b, P)
        y = torch.zeros(b, n_out, dtype=out_dtype, device=x.device)
        return y.index_add(1, rows[0], contrib)
    offset = torch.arange(b, device=x.device).unsqueeze(1)
    contrib = (x.reshape(-1)[(cols + offset * n_in).reshape(-1)] * vprime.reshape(-1)).to(out_dtype)
    y = torch.zeros(b * n_out, dtype=out_dtype, device=x.device)
    return y.index_add(0, (rows + offset * n_out).reshape(-1), contrib).reshape(b, n_out)


def layer_pipeline(
    x: torch.Tensor,
    means: torch.Tensor,
    sigmas: torch.Tensor,
    values: torch.Tensor,
    out_shape: Sequence[int],
    *,
    duplicate_fn: Callable,
    proportions_fn: Callable,
    contract_fn: Callable,
    n_local: int = 2,
    n_global: int = 2,
    context_size: int | None = None,
    chunk_size: int | None = None,
    generator: torch.Generator | int | None = None,
) -> torch.Tensor:
    """The training-mode sparse layer (as ``hyperkern.sparse_layer``) from swappable parts.

    ``x (b, *in_shape)``, ``means (k, r)`` / ``(b, k, r)``, ``sigmas``, ``values`` ``(k,)`` /
    ``(b, k)`` -> ``(b, *out_shape)``. Same seed, same tuples as ``sparse_layer``.
    """
    out_shape = tuple(out_shape)
    in_shape = tuple(x.shape[1:])
    dims = out_shape + in_shape
    if means.dim() == 2:
        means, sigmas, values = means.unsqueeze(0), sigmas.unsqueeze(0), values.unsqueeze(0)
    mu = reference.transform_means(means, dims)
    sigma = reference.transform_sigmas(sigmas, dims)
    points = reference.sample_tuples(mu, dims, n_local, n_global, None, generator)
    duplicates = duplicate_fn(points, dims, context_size)
    vprime = proportions_fn(points, mu, sigma, values, duplicates, context_size, chunk_size)
    rows, cols = reference.flatten_tuples(points, out_shape, in_shape)
    b = x.shape[0]
    y = contract_fn(
        rows.flatten(1), cols.flatten(1), vprime.flatten(1), x.reshape(b, -1), math.prod(out_shape)
    )
    return y.reshape(b, *out_shape)


LAYER_PEERS: dict[str, dict[str, Callable]] = {
    # the original code: dense probability-space proportions, torch.sparse contraction
    "dense_prop": dict(
        duplicate_fn=reference.duplicate_mask,
        proportions_fn=dense_proportions,
        contract_fn=coo_contract,
    ),
    # hyperkern's plain-torch proportions feeding torch.sparse.mm
    "torch_sparse": dict(
        duplicate_fn=reference.duplicate_mask,
        proportions_fn=reference.proportions,
        contract_fn=coo_contract,
    ),
}


def contraction_fn(impl: str, device: torch.device) -> Callable:
    """The contraction called ``impl``: triton (segment-reduced, deterministic), triton_atomic
    (``deterministic=False``: atomic adds, no sort), torch, index_add, coo or csr."""
    if impl in ("triton", "triton_atomic"):
        from measure import triton_or_skip

        return triton_or_skip("contract", device, deterministic=impl == "triton")
    table = {
        "torch": reference.contract,
        "index_add": index_add_contract,
        "coo": coo_contract,
        "csr": csr_contract,
    }
    return table[impl]


LAYER_SEED = 1


def _compiled_dense_proportions() -> Callable:
    if "dense" not in _COMPILED:
        _COMPILED["dense"] = torch.compile(dense_proportions, dynamic=False)
    return _COMPILED["dense"]


_COMPILED: dict[str, Callable] = {}


def layer_fn(impl: str, case, device: torch.device) -> Callable:
    """``(x, means, sigmas, values) -> y`` for layer ``impl`` (triton, torch or a peer), with
    ``case``'s out size, context and chunk sizes, sampling with a fixed seed."""
    from hyperkern import sparse_layer

    options = dict(context_size=case.context_size, chunk_size=case.chunk_size, generator=LAYER_SEED)
    if impl == "dense_prop_compiled":  # the original algorithm given inductor's fusion
        if device.type != "cuda":
            pytest.skip("the compiled dense baseline runs on CUDA (inductor's CPU build is slow)")
        parts = dict(LAYER_PEERS["dense_prop"], proportions_fn=_compiled_dense_proportions())
        return lambda *args: layer_pipeline(*args, (case.n_out,), **parts, **options)
    if impl in LAYER_PEERS:
        return lambda *args: layer_pipeline(*args, (case.n_out,), **LAYER_PEERS[impl], **options)
    if impl == "triton":
        from measure import triton_or_skip

        triton_or_skip("proportions", device)
    return lambda *args: sparse_layer(*args, (case.n_out,), backend=impl, **options)


def train_step(fn: Callable, x: torch.Tensor, leaves: list[torch.Tensor], dy: torch.Tensor):
    """Forward ``y = fn(x, *leaves)``, then the gradients of ``sum(y * dy)`` to the leaves (and
    to ``x`` first when it requires grad): ``(y, *grads)``."""
    y = fn(x, *leaves)
    wrt = [x, *leaves] if x.requires_grad else leaves
    return (y, *torch.autograd.grad(y, wrt, dy))
