"""Plain-torch per-sample linear head whose weights are a linear function of an embedding.

The generator head maps an embedding ``e`` of size ``e_dim`` to a weight matrix
``W(e) = reshape(A @ e + c, (out, in))``. This module evaluates ``y_b = W(e_b) @ x_b`` without
building the per-sample weights ``(b, out, in)``: ``y = (x ⊗ e) @ A'^T + x @ C^T`` with ``A``
viewed as ``A' (out, in·e_dim)``; the only intermediate is ``x ⊗ e`` of shape ``(b, in·e_dim)``.
It is the oracle for :mod:`hyperkern.kernels.hyper_linear` and has the same signature.
"""

from __future__ import annotations

import torch

from hyperkern.validation import check_hyper_linear_inputs


def hyper_linear(
    x: torch.Tensor, e: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """Per-sample linear map with generated weights, ``y_b = reshape(A e_b + c) x_b``.

    Args:
        x: inputs ``(b, in)``.
        e: per-sample embeddings ``(b, e_dim)``.
        weight: generator matrix ``A`` of shape ``(out*in, e_dim)``; row ``o*in + i`` generates
            ``W[o, i]``.
        bias: generator offset ``c`` of shape ``(out*in,)``.

    Returns:
        ``y`` of shape ``(b, out)``.
    """
    out_features = check_hyper_linear_inputs(x, e, weight, bias)
    batch, in_features = x.shape
    e_dim = e.shape[1]
    # x_b ⊗ e_b (b, in·e_dim) is the GEMM operand, A viewed as (out, in·e_dim). Contracting A with
    # e first, as einsum("oid,bd,bi->bo") may, would build the per-sample weights (b, out·in).
    outer = (x[:, :, None] * e[:, None, :]).reshape(batch, in_features * e_dim)
    a = weight.reshape(out_features, in_features * e_dim)
    c = bias.reshape(out_features, in_features)
    return outer @ a.T + x @ c.T


def hyper_linear_materialized(
    x: torch.Tensor, e: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """Same as :func:`hyper_linear` but builds the per-sample weights ``(b, out, in)`` first.

    The hand-built baseline: ``W_b = reshape(A e_b + c)`` then ``y_b = W_b x_b`` by bmm.
    Shapes as in :func:`hyper_linear`.
    """
    out_features = check_hyper_linear_inputs(x, e, weight, bias)
    per_sample = (e @ weight.T + bias).reshape(x.shape[0], out_features, x.shape[1])
    return torch.bmm(per_sample, x.unsqueeze(-1)).squeeze(-1)
