"""Small building blocks shared by the hypernetworks: a seeded MLP body and embedding lookup."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .init import init_linear_


class MLPBody(nn.Module):
    """ReLU MLP ``(..., in) -> (..., sizes[-1])``; identity when ``sizes`` is empty.

    Args:
        in_features: input width.
        sizes: hidden widths, each followed by ReLU.
        generator: source of the initial weights.
    """

    def __init__(self, in_features: int, sizes: Sequence[int], generator: torch.Generator):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for size in sizes:
            linear = nn.Linear(width, size)
            init_linear_(linear, generator)
            layers += [linear, nn.ReLU()]
            width = size
        self.net = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def select_embedding(
    embeddings: torch.Tensor, z: torch.Tensor | None, task: int | torch.Tensor
) -> torch.Tensor:
    """Pick the hypernetwork input: ``z`` if given, else row(s) ``task`` of ``embeddings``.

    Args:
        embeddings: learned table ``(n, e)``.
        z: explicit embedding ``(e,)`` or ``(b, e)``, or None.
        task: index (int) or indices ``(b,)`` into the table, used when ``z`` is None.

    Returns:
        ``(e,)`` or ``(b, e)``.
    """
    if z is None:
        return embeddings[task]
    if z.dim() not in (1, 2) or z.shape[-1] != embeddings.shape[1]:
        raise ValueError(
            f"z must have shape (e,) or (b, e) with e={embeddings.shape[1]}, got {tuple(z.shape)}"
        )
    return z
