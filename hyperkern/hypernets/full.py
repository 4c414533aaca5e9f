"""Full hypernetwork: an embedding is mapped to every target parameter at once."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import EmbeddingHypernetwork
from .body import MLPBody, select_embedding
from .init import hyperfan_head_, init_linear_, seeded_generator, target_variances


class FullHypernetwork(EmbeddingHypernetwork):
    """``z (e,) -> MLP -> head -> (p,)`` with ``p`` exactly the target's parameter count.

    Args:
        target: any ``nn.Module``; only its parameter shapes are used (its own parameters are not
            registered here and never trained).
        embedding_dim: size ``e`` of the learned embeddings.
        hidden_sizes: widths of the ReLU body between embedding and head.
        num_embeddings: rows of the learned embedding table (e.g. one per task).
        init: ``"hyperfan_in"``, ``"hyperfan_out"`` or ``"default"`` (PyTorch's Linear init) for
            the head.
        gain: target-init gain (``sqrt(2)`` for ReLU targets).
        seed: seeds every initial value.
    """

    def __init__(
        self,
        target: nn.Module,
        embedding_dim: int = 8,
        hidden_sizes: Sequence[int] = (64,),
        num_embeddings: int = 1,
        init: str = "hyperfan_in",
        gain: float = 1.0,
        seed: int = 0,
    ) -> None:
        generator = seeded_generator(seed)
        super().__init__(target, embedding_dim, num_embeddings, generator)
        self.body = MLPBody(embedding_dim, hidden_sizes, generator)
        self.head = nn.Linear(self.body.out_features, self._target.num_params)
        if init == "default":
            init_linear_(self.head, generator)
        else:
            variance, mean = target_variances(self._target.specs, init, gain)
            with torch.no_grad():
                second_moment = self.body(self.embeddings).pow(2).mean().item()
            hyperfan_head_(
                self.head.weight, self.head.bias, variance, mean, second_moment, generator
            )

    def generate_flat(
        self, z: torch.Tensor | None = None, task: int | torch.Tensor = 0
    ) -> torch.Tensor:
        """Generated target parameters: ``(p,)`` for ``z (e,)``/int task, ``(b, p)`` for batches."""
        return self.head(self.body(select_embedding(self.embeddings, z, task)))
