"""Conditional (per-sample) hypernetwork: every input gets its own generated MLP.

Layer ``l`` of sample ``b`` has weights ``W_l(e_b) = reshape(A_l e_b + c_l, (out, in))`` and
bias ``b_l(e_b) = B_l e_b + d_l``. The MLP can be evaluated by several equivalent paths:

- ``"loop"``: one ``F.linear`` per sample (the naive baseline).
- ``"grouped_conv"``: the tutorial's trick, a 1x1 ``conv1d`` with ``groups=b`` (any batch size).
- ``"bmm"``: batched matmul over materialised ``(b, out, in)`` weights.
- ``"vmap"``: ``torch.func.vmap`` of ``F.linear`` over samples.
- ``"outer"``: never materialises ``W`` (plain torch): one GEMM of ``x_b ⊗ e_b``
  ``(b, in·e_dim)`` with ``A`` viewed as ``(out, in·e_dim)``.
- ``"fused"``: the Triton kernel :mod:`hyperkern.kernels.hyper_linear` (CUDA, or CPU under
  ``TRITON_INTERPRET=1``), also never materialising ``W``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hyperkern.reference.hyper_linear import hyper_linear as hyper_linear_outer

from .init import normal_, seeded_generator

MATERIALISED_PATHS = ("loop", "grouped_conv", "bmm", "vmap")
PATHS = (*MATERIALISED_PATHS, "outer", "fused")


def per_sample_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, backend: str = "bmm"
) -> torch.Tensor:
    """``y[b] = weight[b] @ x[b] + bias[b]`` for a batch of per-sample weights.

    Args:
        x: ``(b, in)``.
        weight: ``(b, out, in)``.
        bias: ``(b, out)`` or None.
        backend: the implementation, one of ``MATERIALISED_PATHS``.

    Returns:
        ``(b, out)``.
    """
    if x.dim() != 2 or weight.dim() != 3 or weight.shape[0] != x.shape[0]:
        raise ValueError(
            f"x must be (b, in) and weight (b, out, in); got {tuple(x.shape)}, "
            f"{tuple(weight.shape)}"
        )
    if weight.shape[2] != x.shape[1]:
        raise ValueError(f"weight must be (b, out, {x.shape[1]}), got {tuple(weight.shape)}")
    batch, out_features, in_features = weight.shape
    if bias is not None and bias.shape != (batch, out_features):
        raise ValueError(f"bias must be ({batch}, {out_features}), got {tuple(bias.shape)}")
    if backend == "loop":
        # unbind, not x[b]: indexing's backward writes a full-size zero tensor per sample
        rows = [F.linear(xb, wb) for xb, wb in zip(x.unbind(0), weight.unbind(0), strict=True)]
        y = torch.stack(rows) if rows else x.new_zeros(0, out_features)
    elif backend == "grouped_conv":
        if batch == 0:
            y = x.new_zeros(0, out_features)
        else:
            filters = weight.reshape(batch * out_features, in_features, 1)
            y = F.conv1d(x.reshape(1, batch * in_features, 1), filters, groups=batch)
            y = y.reshape(batch, out_features)
    elif backend == "bmm":
        y = torch.bmm(weight, x.unsqueeze(-1)).squeeze(-1)
    elif backend == "vmap":
        y = torch.func.vmap(F.linear)(x, weight)
    else:
        raise ValueError(f"backend must be one of {MATERIALISED_PATHS}, got {backend!r}")
    return y if bias is None else y + bias


class PerSampleMLPHypernetwork(nn.Module):
    """Generates an MLP ``layer_sizes[0] -> ... -> layer_sizes[-1]`` for every embedding.

    Args:
        layer_sizes: widths ``(in, h_1, ..., out)`` of the generated MLP (ReLU between layers).
        embedding_dim: size ``e_dim`` of the per-sample embeddings (the conditioning).
        init: ``"hyperfan_in"`` (generated weights start with ``Var = gain² / (2 fan_in)``,
            biases with ``gain² / 2``, for ``E[e²] = input_second_moment``) or ``"small"``.
        gain: target-init gain (``sqrt(2)`` for ReLU MLPs).
        input_second_moment: expected ``E[e²]`` of the embeddings, used by hyperfan-in.
        seed: seeds every initial value.
    """

    def __init__(
        self,
        layer_sizes: Sequence[int],
        embedding_dim: int,
        init: str = "hyperfan_in",
        gain: float = 1.0,
        input_second_moment: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if len(layer_sizes) < 2 or min(layer_sizes) < 1:
            raise ValueError(f"layer_sizes needs >= 2 positive widths, got {layer_sizes}")
        if init not in ("hyperfan_in", "small"):
            raise ValueError(f"init must be 'hyperfan_in' or 'small', got {init!r}")
        self.layer_sizes = tuple(int(s) for s in layer_sizes)
        self.embedding_dim = embedding_dim
        generator = seeded_generator(seed)
        self.weight_gen = nn.ParameterList()  # A_l (out*in, e_dim)
        self.weight_offset = nn.ParameterList()  # c_l (out*in,)
        self.bias_gen = nn.ParameterList()  # B_l (out, e_dim)
        self.bias_offset = nn.ParameterList()  # d_l (out,)
        for fan_in, fan_out in zip(self.layer_sizes[:-1], self.layer_sizes[1:], strict=True):
            a = torch.empty(fan_out * fan_in, embedding_dim)
            b = torch.empty(fan_out, embedding_dim)
            if init == "hyperfan_in":
                scale = embedding_dim * input_second_moment
                normal_(a, (0.5 * gain**2 / (fan_in * scale)) ** 0.5, generator)
                normal_(b, (0.5 * gain**2 / scale) ** 0.5, generator)
            else:
                normal_(a, 0.01, generator)
                normal_(b, 0.01, generator)
            self.weight_gen.append(nn.Parameter(a))
            self.weight_offset.append(nn.Parameter(torch.zeros(fan_out * fan_in)))
            self.bias_gen.append(nn.Parameter(b))
            self.bias_offset.append(nn.Parameter(torch.zeros(fan_out)))

    @property
    def num_layers(self) -> int:
        return len(self.layer_sizes) - 1

    def generate(self, e: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Materialise every sample's MLP.

        ``e (b, e_dim)`` -> ``[(W_l (b, out, in), b_l (b, out)) for each layer l]``.
        """
        self._check_embedding(e)
        layers = []
        for index in range(self.num_layers):
            fan_in, fan_out = self.layer_sizes[index], self.layer_sizes[index + 1]
            flat = F.linear(e, self.weight_gen[index], self.weight_offset[index])
            bias = F.linear(e, self.bias_gen[index], self.bias_offset[index])
            layers.append((flat.reshape(e.shape[0], fan_out, fan_in), bias))
        return layers

    def _check_embedding(self, e: torch.Tensor) -> None:
        if e.dim() != 2 or e.shape[1] != self.embedding_dim:
            raise ValueError(f"e must be (b, {self.embedding_dim}), got {tuple(e.shape)}")

    def forward(self, x: torch.Tensor, e: torch.Tensor, backend: str = "bmm") -> torch.Tensor:
        """Evaluate sample ``b``'s generated MLP on ``x[b]``.

        Args:
            x: ``(b, layer_sizes[0])``.
            e: ``(b, e_dim)``.
            backend: the implementation, one of :data:`PATHS`.

        Returns:
            ``(b, layer_sizes[-1])`` (no activation after the last layer).
        """
        if backend not in PATHS:
            raise ValueError(f"backend must be one of {PATHS}, got {backend!r}")
        self._check_embedding(e)
        if x.dim() != 2 or x.shape != (e.shape[0], self.layer_sizes[0]):
            expected = (e.shape[0], self.layer_sizes[0])
            raise ValueError(f"x must be {expected}, got {tuple(x.shape)}")
        h = x
        if backend in MATERIALISED_PATHS:
            layers = self.generate(e)
            for index, (weight, bias) in enumerate(layers):
                h = per_sample_linear(h, weight, bias, backend)
                if index < self.num_layers - 1:
                    h = torch.relu(h)
            return h
        if backend == "fused":
            from hyperkern.kernels.hyper_linear import hyper_linear as linear_head
        else:
            linear_head = hyper_linear_outer
        for index in range(self.num_layers):
            bias = F.linear(e, self.bias_gen[index], self.bias_offset[index])
            h = linear_head(h, e, self.weight_gen[index], self.weight_offset[index]) + bias
            if index < self.num_layers - 1:
                h = torch.relu(h)
        return h
