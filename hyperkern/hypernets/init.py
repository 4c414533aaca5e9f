"""Seeded initialisers, including hyperfan-in / hyperfan-out (Chang, Flokas & Lipson, ICLR 2020,
"Principled weight initialization for hypernetworks").

A generator head ``W = H e + c`` with ``H`` zero-mean, independent of ``e`` and ``c = 0`` gives
``Var(W) = d_e · Var(H) · E[e²]``. Hyperfan picks ``Var(H)`` so that ``Var(W)`` equals what a
standard fan-based init gives the target: ``gain² / fan_in`` (hyperfan-in) or
``gain² / fan_out`` (hyperfan-out). When a layer's bias is generated too, weight and bias each
take half of the output variance, as in the paper: ``Var(W) = gain² / (2 fan)`` and
``Var(b) = gain² / 2``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .target import ParamSpec

_MODES = ("hyperfan_in", "hyperfan_out")


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``."""
    return torch.Generator().manual_seed(int(seed))


@torch.no_grad()
def normal_(tensor: torch.Tensor, std: float | torch.Tensor, generator: torch.Generator) -> None:
    """Fill ``tensor`` in place with ``N(0, std²)``; ``std`` may broadcast against ``tensor``."""
    noise = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
    tensor.copy_(noise.to(tensor.device) * std)


@torch.no_grad()
def init_linear_(layer: nn.Linear, generator: torch.Generator) -> None:
    """PyTorch's default ``nn.Linear`` init (uniform ``±1/sqrt(fan_in)``) from ``generator``."""
    bound = 1.0 / math.sqrt(max(layer.in_features, 1))
    for tensor in (layer.weight, layer.bias):
        if tensor is not None:
            rand = torch.rand(tensor.shape, generator=generator, dtype=tensor.dtype)
            tensor.copy_((rand * 2 - 1).to(tensor.device) * bound)


def target_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of ``shape`` ``(out, in, *kernel)``."""
    if len(shape) < 2:
        raise ValueError(f"fans need a weight with >= 2 dims, got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def target_variances(specs: list[ParamSpec], mode: str = "hyperfan_in", gain: float = 1.0):
    """Desired variance of every generated scalar, ``(p,)``, plus the constant it should start at.

    Weights (>= 2 dims) get ``gain² / fan`` (halved when a ``.bias`` sibling is generated);
    a ``.bias`` whose ``.weight`` sibling is a weight gets ``gain² / 2``. Other 1-D parameters
    (e.g. norm scales) get variance 0 and start at 1 (``*.weight``) or 0.

    Returns:
        ``(variance (p,), mean (p,))`` float64 tensors.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    by_name = {spec.name: spec for spec in specs}
    variance = torch.zeros(sum(s.numel for s in specs), dtype=torch.float64)
    mean = torch.zeros_like(variance)
    for spec in specs:
        rows = slice(spec.offset, spec.offset + spec.numel)
        stem, dot, leaf = spec.name.rpartition(".")
        sibling = stem + dot + ("bias" if leaf == "weight" else "weight")
        if len(spec.shape) >= 2:
            fan_in, fan_out = target_fans(spec.shape)
            fan = fan_in if mode == "hyperfan_in" else fan_out
            share = 0.5 if sibling in by_name else 1.0
            variance[rows] = share * gain**2 / fan
        elif leaf == "bias" and sibling in by_name and len(by_name[sibling].shape) >= 2:
            variance[rows] = 0.5 * gain**2
        elif leaf == "weight":
            mean[rows] = 1.0
    return variance, mean


@torch.no_grad()
def hyperfan_head_(
    head_weight: torch.Tensor,
    head_bias: torch.Tensor | None,
    variance: torch.Tensor,
    mean: torch.Tensor,
    input_second_moment: float,
    generator: torch.Generator,
) -> None:
    """Initialise a generator head ``W = head_weight @ e + head_bias`` row by row.

    Args:
        head_weight: ``(p, d_e)``; row ``r`` gets ``std = sqrt(variance[r] / (d_e · E[e²]))``.
        head_bias: ``(p,)`` set to ``mean``, or None.
        variance: desired ``Var(W_r)``, ``(p,)``.
        mean: desired starting value of ``W_r``, ``(p,)``.
        input_second_moment: ``E[e²]`` of the head's input (1 for ``N(0, 1)`` embeddings).
        generator: source of randomness.
    """
    d_e = head_weight.shape[1]
    if input_second_moment <= 0:
        raise ValueError(f"input_second_moment must be > 0, got {input_second_moment}")
    std = (variance / (d_e * input_second_moment)).sqrt().to(head_weight.dtype)
    normal_(head_weight, std[:, None].to(head_weight.device), generator)
    if head_bias is not None:
        head_bias.copy_(mean.to(head_bias))
