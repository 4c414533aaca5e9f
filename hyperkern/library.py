"""The ``torch.library`` ops of hyperkern, each defined once (docs/algorithm.md §2-§5).

Every op has two implementations with one signature: the plain-torch launcher from
:mod:`hyperkern.reference` (the CPU path and the oracle) and the Triton launcher from
:mod:`hyperkern.kernels` (the CUDA path; CPU under ``TRITON_INTERPRET=1``). The ``triton`` flag
of each op picks one; callers resolve it once from ``backend=`` (:func:`hyperkern.backend.resolve`).
Fake implementations let ``torch.compile(fullgraph=True)`` trace the ops, and autograd is
registered once per op. No implementation reads a device value on the host.

- ``hyperkern::sample``: tuples, keys and flat ``(row, col)`` from means and a seed tensor;
- ``hyperkern::duplicate_mask``: repeats of a key within a context;
- ``hyperkern::proportions`` (+ ``proportions_backward``): ``v'`` and per-mean normalisers;
- ``hyperkern::contract`` (+ ``contract_dvprime``): ``y = W x``;
- ``hyperkern::contract_rows`` (+ ``contract_rows_dot``): ``y = W x`` for a W whose rows hold
  ``m`` nonzeros each (sampled attention);
- ``hyperkern::sparse_weight`` (+ ``sparse_weight_backward``): raw parameters -> the sampled W's
  ``(rows, cols, v')``: transforms, ``sample``, ``duplicate_mask`` and ``proportions`` in one
  op, so that a layer step issues a handful of ops.
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch._library.custom_ops import CustomOpDef

from hyperkern import reference
from hyperkern._shared import VARIANCE_FLOOR, compute_dtype

_kernels: ModuleType | None = None


def _impl(triton: bool) -> ModuleType:
    """The launcher module: :mod:`hyperkern.kernels` (imported once) or the reference."""
    global _kernels
    if not triton:
        return reference
    if _kernels is None:
        import hyperkern.kernels as kernels

        _kernels = kernels
    return _kernels


def _launcher_op(name: str, schema: str, launcher: str) -> CustomOpDef:
    """The op ``hyperkern::<name>`` of ``schema``, whose last argument ``bool triton`` picks the
    implementation: the launcher of that name in :mod:`hyperkern.kernels` or
    :mod:`hyperkern.reference`, called with the other arguments."""

    def implementation(*args):
        return getattr(_impl(args[-1]), launcher)(*args[:-1])

    qualname = f"hyperkern::{name}"
    return torch.library.custom_op(qualname, implementation, mutates_args=(), schema=schema)


# ---- sample, duplicate mask -----------------------------------------------------------------

#: ``mu (B, k, r)``, ``seed ()`` -> ``points (B, k, S, r)``, ``keys``, ``rows``, ``cols``
#: ``(B, k, S)``, all int64 (docs/algorithm.md §2, §3).
sample = _launcher_op(
    "sample",
    "(Tensor mu, Tensor seed, int[] dims, int n_out_dims, int n_local, int n_global, "
    "int[] region, bool cantor, bool triton) -> (Tensor, Tensor, Tensor, Tensor)",
    "sample",
)


@sample.register_fake
def _(mu, seed, dims, n_out_dims, n_local, n_global, region, cantor, triton):
    B, k, r = mu.shape
    S = 2**r + n_local + n_global
    flat = [mu.new_empty((B, k, S), dtype=torch.int64) for _ in range(3)]
    return (mu.new_empty((B, k, S, r), dtype=torch.int64), *flat)


#: ``(B, k, S)`` int64 keys -> ``(B, k, S)`` bool, True at repeats within a context (§3).
duplicate_mask = _launcher_op(
    "duplicate_mask",
    "(Tensor keys, int context_size, bool triton) -> Tensor",
    "duplicate_mask_from_keys",
)


@duplicate_mask.register_fake
def _(keys, context_size, triton):
    return torch.empty_like(keys, dtype=torch.bool)


# ---- proportions ----------------------------------------------------------------------------

#: ``(v' (B, k, S), lognorm (B, k))`` (§4); see :func:`hyperkern.reference.proportions`.
proportions = _launcher_op(
    "proportions",
    "(Tensor points, Tensor mu, Tensor sigma, Tensor values, Tensor duplicates, "
    "int context_size, int chunk_size, bool triton) -> (Tensor, Tensor)",
    "proportions_forward",
)


@proportions.register_fake
def _(points, mu, sigma, values, duplicates, context_size, chunk_size, triton):
    B, k, S = points.shape[:3]
    return mu.new_empty((B, k, S)), mu.new_empty((B, k))


#: ``(dmu (B, k, r), dsigma (B, k, r), dvalues (B, k))`` from ``grad (B, k, S)``.
proportions_backward = _launcher_op(
    "proportions_backward",
    "(Tensor grad, Tensor points, Tensor mu, Tensor sigma, Tensor values, Tensor duplicates, "
    "Tensor lognorm, int context_size, bool triton) -> (Tensor, Tensor, Tensor)",
    "proportions_backward",
)


@proportions_backward.register_fake
def _(grad, points, mu, sigma, values, duplicates, lognorm, context_size, triton):
    return torch.empty_like(mu), torch.empty_like(sigma), torch.empty_like(values)


def _proportions_setup(ctx, inputs, output) -> None:
    points, mu, sigma, values, duplicates, context_size, _, triton = inputs
    ctx.save_for_backward(points, mu, sigma, values, duplicates, output[1])
    ctx.context_size, ctx.triton = context_size, triton
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)


def _proportions_grad(ctx, grad_vprime, _grad_lognorm):
    if grad_vprime is None:
        return (None,) * 8
    points, mu, sigma, values, duplicates, lognorm = ctx.saved_tensors
    dmu, dsigma, dvalues = proportions_backward(
        grad_vprime.contiguous(),
        points,
        mu,
        sigma,
        values,
        duplicates,
        lognorm,
        ctx.context_size,
        ctx.triton,
    )
    return None, dmu, dsigma, dvalues, None, None, None, None


proportions.register_autograd(_proportions_grad, setup_context=_proportions_setup)


# ---- contraction ----------------------------------------------------------------------------


#: ``(B, P)`` nonzeros times ``x (b, n_in, c)`` -> ``(b, n_out, c)`` (§5).
contract = _launcher_op(
    "contract",
    "(Tensor rows, Tensor cols, Tensor vprime, Tensor x, int n_out, bool deterministic, "
    "bool triton) -> Tensor",
    "contract_forward",
)


@contract.register_fake
def _(rows, cols, vprime, x, n_out, deterministic, triton):
    return x.new_empty(x.shape[0], n_out, x.shape[2])


#: ``dv'_j = <grad_y[row_j], x[col_j]>`` ``(B, P)`` from ``x (b, n_in, c)`` and ``grad_y
#: (b, n_out, c)`` (summed over the batch for a shared W): the contraction's gradient in ``v'``
#: and the sampled dot products of attention scores; differentiable itself.
contract_dvprime = _launcher_op(
    "contract_dvprime",
    "(Tensor rows, Tensor cols, Tensor x, Tensor grad_y, bool triton) -> Tensor",
    "contract_dvprime",
)


@contract_dvprime.register_fake
def _(rows, cols, x, grad_y, triton):
    return x.new_empty(rows.shape)


def _contract_setup(ctx, inputs, output) -> None:
    rows, cols, vprime, x, n_out, deterministic, triton = inputs
    ctx.save_for_backward(rows, cols, vprime, x)
    ctx.deterministic, ctx.triton = deterministic, triton


def _contract_grad(ctx, grad_y):
    rows, cols, vprime, x = ctx.saved_tensors
    grad_y = grad_y.contiguous()
    d_vprime = d_x = None
    if ctx.needs_input_grad[2]:
        d_vprime = contract_dvprime(rows, cols, x, grad_y, ctx.triton)
    if ctx.needs_input_grad[3]:  # W^T dy: the forward with rows and cols swapped
        d_x = contract(cols, rows, vprime, grad_y, x.shape[1], ctx.deterministic, ctx.triton)
    return None, None, d_vprime, d_x, None, None, None


contract.register_autograd(_contract_grad, setup_context=_contract_setup)


def _dvprime_setup(ctx, inputs, output) -> None:
    rows, cols, x, grad_y, triton = inputs
    ctx.save_for_backward(rows, cols, x, grad_y)
    ctx.triton = triton


def _dvprime_grad(ctx, g):
    rows, cols, x, grad_y = ctx.saved_tensors
    g = g.contiguous()
    d_x = d_grad_y = None
    if ctx.needs_input_grad[2]:  # dx[col_j] += g_j grad_y[row_j]
        d_x = contract(cols, rows, g, grad_y, x.shape[1], True, ctx.triton)
    if ctx.needs_input_grad[3]:  # dgrad_y[row_j] += g_j x[col_j]
        d_grad_y = contract(rows, cols, g, x, grad_y.shape[1], True, ctx.triton)
    return None, None, d_x, d_grad_y, None


contract_dvprime.register_autograd(_dvprime_grad, setup_context=_dvprime_setup)


# ---- row-grouped contraction: output row i holds the m nonzeros cols[:, i] ------------------


def _op_with_fake(name: str, schema: str, fake) -> CustomOpDef:
    """:func:`_launcher_op` of the launcher ``name``, with ``fake`` as its fake implementation."""
    op = _launcher_op(name, schema, name)
    op.register_fake(fake)
    return op


#: ``cols``, ``vprime`` ``(B, n, m)`` times ``x (b, n_in, c)`` -> ``(b, n, c)``: ``contract``
#: for a W in ELL layout (sampled attention: a query's sampled keys), with no sort or scatter.
contract_rows = _op_with_fake(
    "contract_rows",
    "(Tensor cols, Tensor vprime, Tensor x, bool triton) -> Tensor",
    lambda cols, vprime, x, triton: x.new_empty(x.shape[0], cols.shape[1], x.shape[2]),
)

#: ``s[i, s] = <z[i], x[cols[i, s]]>`` ``(B, n, m)`` from ``x (b, n_in, c)``, ``z (b, n, c)``:
#: ``contract_rows``' gradient in ``v'`` and the scores of sampled attention.
contract_rows_dot = _op_with_fake(
    "contract_rows_dot",
    "(Tensor cols, Tensor x, Tensor z, bool triton) -> Tensor",
    lambda cols, x, z, triton: x.new_empty(cols.shape),
)


def _scatter_rows(cols, values, src, n_in: int, triton: bool):
    """``W^T src`` for a row-grouped W: ``dst[cols[i, s]] += values[i, s] src[i]`` ``(b, n_in,
    c)``, the segment-reduced ``contract`` with rows and cols swapped."""
    B, n, m = cols.shape
    row_ids = torch.arange(n, device=cols.device).repeat_interleave(m).expand(B, n * m)
    flat = cols.reshape(B, n * m)
    return contract(flat, row_ids, values.reshape(B, n * m), src, n_in, True, triton)


def _rows_setup(ctx, inputs, output) -> None:
    *tensors, ctx.triton = inputs
    ctx.save_for_backward(*tensors)


def _contract_rows_grad(ctx, grad_y):
    cols, vprime, x = ctx.saved_tensors
    grad_y = grad_y.contiguous()
    d_vprime = d_x = None
    if ctx.needs_input_grad[1]:
        d_vprime = contract_rows_dot(cols, x, grad_y, ctx.triton)
    if ctx.needs_input_grad[2]:
        d_x = _scatter_rows(cols, vprime, grad_y, x.shape[1], ctx.triton)
    return None, d_vprime, d_x, None


def _contract_rows_dot_grad(ctx, g):
    cols, x, z = ctx.saved_tensors
    g = g.contiguous()
    d_x = d_z = None
    if ctx.needs_input_grad[1]:  # dx[cols[i, s]] += g[i, s] z[i]
        d_x = _scatter_rows(cols, g, z, x.shape[1], ctx.triton)
    if ctx.needs_input_grad[2]:  # dz[i] += sum_s g[i, s] x[cols[i, s]]
        d_z = contract_rows(cols, g, x, ctx.triton)
    return None, d_x, d_z, None


contract_rows.register_autograd(_contract_rows_grad, setup_context=_rows_setup)
contract_rows_dot.register_autograd(_contract_rows_dot_grad, setup_context=_rows_setup)


# ---- the sampled W from raw parameters ------------------------------------------------------


def _transforms(means, sigmas, dims, sigma_scale, min_sigma, transform):
    mu = reference.transform_means(means, dims, transform)
    sigma = reference.transform_sigmas(sigmas, dims, sigma_scale, min_sigma)
    return mu, sigma


def _sparse_weight(
    means, sigmas, values, seed, dims, n_out_dims, n_local, n_global, region, sigma_scale,
    min_sigma, context_size, chunk_size, cantor, transform, triton,
):  # fmt: skip
    impl = _impl(triton)
    dtype = means.dtype
    means, sigmas, values = (t.to(compute_dtype(dtype)) for t in (means, sigmas, values))
    mu, sigma = _transforms(means, sigmas, dims, sigma_scale, min_sigma, transform)
    points, keys, rows, cols = impl.sample(
        mu, seed, dims, n_out_dims, n_local, n_global, region, cantor
    )
    duplicates = impl.duplicate_mask_from_keys(keys, context_size)
    vprime, lognorm = impl.proportions_forward(
        points, mu, sigma, values, duplicates, context_size, chunk_size
    )
    vprime = vprime.flatten(1).to(dtype)
    return rows.flatten(1), cols.flatten(1), vprime, points, duplicates, lognorm


#: Raw ``means (B, k, r)``, ``sigmas (B, k)``, ``values (B, k)`` -> ``rows``, ``cols``, ``v'``
#: ``(B, P)`` and, for the backward, ``points (B, k, S, r)``, ``duplicates (B, k, S)``,
#: ``lognorm (B, k)``: the transforms, ``sample``, ``duplicate_mask`` and ``proportions``.
sparse_weight = torch.library.custom_op(
    "hyperkern::sparse_weight",
    _sparse_weight,
    mutates_args=(),
    schema="(Tensor means, Tensor sigmas, Tensor values, Tensor seed, int[] dims, int n_out_dims, "
    "int n_local, int n_global, int[] region, float sigma_scale, float min_sigma, "
    "int context_size, int chunk_size, bool cantor, str transform, bool triton) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
)


@sparse_weight.register_fake
def _(means, sigmas, values, seed, dims, n_out_dims, n_local, n_global, region, *_):
    B, k, r = means.shape
    S = 2**r + n_local + n_global
    flat = [means.new_empty((B, k * S), dtype=torch.int64) for _ in range(2)]
    return (
        *flat,
        means.new_empty((B, k * S)),
        means.new_empty((B, k, S, r), dtype=torch.int64),
        means.new_empty((B, k, S), dtype=torch.bool),
        means.new_empty((B, k), dtype=compute_dtype(means.dtype)),
    )


def _sparse_weight_backward(
    grad_vprime, means, sigmas, values, points, duplicates, lognorm, dims, sigma_scale, min_sigma,
    context_size, transform, triton,
):  # fmt: skip
    dtype = means.dtype
    means, sigmas, values = (t.to(compute_dtype(dtype)) for t in (means, sigmas, values))
    mu, sigma = _transforms(means, sigmas, dims, sigma_scale, min_sigma, transform)
    grad = grad_vprime.reshape(points.shape[:3]).to(mu.dtype)
    dmu, dsigma, dvalues = _impl(triton).proportions_backward(
        grad, points, mu, sigma, values, duplicates, lognorm, context_size
    )
    dmeans = reference.transform_means_grad(dmu, means, dims, transform)
    scale = reference.dims_tensor(dims, sigmas.device, mu.dtype) * sigma_scale
    dsigma = torch.where(sigma > VARIANCE_FLOOR, dsigma, 0.0)  # no gradient below the floor
    dsigmas = (dsigma * scale).sum(-1) * torch.sigmoid(sigmas + 2)
    return dmeans.to(dtype), dsigmas.to(dtype), dvalues.to(dtype)


#: ``(dmeans (B, k, r), dsigmas (B, k), dvalues (B, k))`` from ``dv' (B, P)``: the
#: proportions backward, then the chain rule through the two transforms.
sparse_weight_backward = torch.library.custom_op(
    "hyperkern::sparse_weight_backward",
    _sparse_weight_backward,
    mutates_args=(),
    schema="(Tensor grad_vprime, Tensor means, Tensor sigmas, Tensor values, Tensor points, "
    "Tensor duplicates, Tensor lognorm, int[] dims, float sigma_scale, float min_sigma, "
    "int context_size, str transform, bool triton) -> (Tensor, Tensor, Tensor)",
)


@sparse_weight_backward.register_fake
def _(grad_vprime, means, sigmas, values, *_):
    return torch.empty_like(means), torch.empty_like(sigmas), torch.empty_like(values)


def _sparse_weight_setup(ctx, inputs, output) -> None:
    means, sigmas, values, _, dims, _, _, _, _, sigma_scale, min_sigma, cs, *_ = inputs
    transform, triton = inputs[-2:]
    _, _, _, points, duplicates, lognorm = output
    ctx.save_for_backward(means, sigmas, values, points, duplicates, lognorm)
    ctx.options = (dims, sigma_scale, min_sigma, cs, transform, triton)
    ctx.mark_non_differentiable(*output[:2], *output[3:])
    ctx.set_materialize_grads(False)  # no zero gradients for the five integer/saved outputs


def _sparse_weight_grad(ctx, _rows, _cols, grad_vprime, *_):
    if grad_vprime is None:
        return (None,) * 16
    means, sigmas, values, points, duplicates, lognorm = ctx.saved_tensors
    grads = sparse_weight_backward(
        grad_vprime.contiguous(), means, sigmas, values, points, duplicates, lognorm, *ctx.options
    )
    return (*grads, *[None] * 13)


sparse_weight.register_autograd(_sparse_weight_grad, setup_context=_sparse_weight_setup)


def _refuse_double_backward(op_name: str):
    def backward(ctx, *grads):
        raise RuntimeError(
            f"hyperkern: second derivatives through {op_name} are not supported (the backward "
            "is a closed-form kernel); use first-order gradients, or finite differences"
        )

    return backward


def _no_context(ctx, inputs, output) -> None:
    pass


for _op in (sparse_weight_backward, proportions_backward):
    _op.register_autograd(_refuse_double_backward(_op._qualname), setup_context=_no_context)
