"""What every embedding-driven hypernetwork shares: the target it generates parameters for, the
learned embedding table and running the target on generated parameters."""

from __future__ import annotations

import torch
from torch import nn

from .target import TargetHolder, unflatten_params


class EmbeddingHypernetwork(nn.Module):
    """Base of the full and chunked hypernetworks: subclasses define :meth:`generate_flat`.

    Args:
        target: any ``nn.Module``; only its parameter shapes are used (its own parameters are not
            registered here and never trained).
        embedding_dim: size ``e`` of the learned embeddings.
        num_embeddings: rows of the learned embedding table (e.g. one per task).
        generator: draws the embeddings' initial values (the subclass's seeded stream).
    """

    def __init__(
        self, target: nn.Module, embedding_dim: int, num_embeddings: int, generator: torch.Generator
    ) -> None:
        super().__init__()
        self._target = TargetHolder(target)
        self.embeddings = nn.Parameter(
            torch.randn(num_embeddings, embedding_dim, generator=generator)
        )

    @property
    def target(self) -> nn.Module:
        return self._target.module

    @property
    def num_target_params(self) -> int:
        return self._target.num_params

    def generate_flat(
        self, z: torch.Tensor | None = None, task: int | torch.Tensor = 0
    ) -> torch.Tensor:
        """Generated target parameters: ``(p,)`` for ``z (e,)``/int task, ``(b, p)`` for batches."""
        raise NotImplementedError

    def generate(
        self, z: torch.Tensor | None = None, task: int | torch.Tensor = 0
    ) -> dict[str, torch.Tensor]:
        """Generated target parameters by name: ``{name: shape}`` or ``{name: (b, *shape)}``."""
        return unflatten_params(self.generate_flat(z, task), self._target.specs)

    def forward(
        self, x: torch.Tensor, z: torch.Tensor | None = None, task: int | torch.Tensor = 0
    ) -> torch.Tensor:
        """Run the target on ``x`` with generated weights; one weight set per sample when ``z`` is
        ``(b, e)`` or ``task`` is ``(b,)`` (then ``x`` is ``(b, *in)``)."""
        return self._target(self.generate_flat(z, task), x)
