"""Chunked hypernetwork: one shared generator emits the target's parameters chunk by chunk."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .base import EmbeddingHypernetwork
from .body import MLPBody, select_embedding
from .init import hyperfan_head_, init_linear_, seeded_generator, target_variances


class ChunkedHypernetwork(EmbeddingHypernetwork):
    """``[z, c_k] -> MLP -> (chunk_size,)`` for each of ``ceil(p / chunk_size)`` learned chunk
    embeddings ``c_k``; the chunks are concatenated and cut to exactly ``p`` scalars.

    Args:
        target: any ``nn.Module`` (only its parameter shapes are used).
        chunk_size: scalars per generated chunk.
        embedding_dim: size of the (task) embedding ``z``.
        chunk_embedding_dim: size of each chunk embedding ``c_k``.
        hidden_sizes: widths of the shared ReLU body.
        num_embeddings: rows of the learned task-embedding table.
        init: ``"hyperfan_in"``, ``"hyperfan_out"`` or ``"default"``. Head row ``r`` serves
            position ``r`` of every chunk, so hyperfan uses the mean desired variance over them.
        gain: target-init gain.
        seed: seeds every initial value.
    """

    def __init__(
        self,
        target: nn.Module,
        chunk_size: int,
        embedding_dim: int = 8,
        chunk_embedding_dim: int = 8,
        hidden_sizes: Sequence[int] = (64,),
        num_embeddings: int = 1,
        init: str = "hyperfan_in",
        gain: float = 1.0,
        seed: int = 0,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        generator = seeded_generator(seed)
        super().__init__(target, embedding_dim, num_embeddings, generator)
        self.chunk_size = chunk_size
        self.num_chunks = math.ceil(self._target.num_params / chunk_size)
        self.chunk_embeddings = nn.Parameter(
            torch.randn(self.num_chunks, chunk_embedding_dim, generator=generator)
        )
        self.body = MLPBody(embedding_dim + chunk_embedding_dim, hidden_sizes, generator)
        self.head = nn.Linear(self.body.out_features, chunk_size)
        if init == "default":
            init_linear_(self.head, generator)
        else:
            variance, mean = target_variances(self._target.specs, init, gain)
            pad = self.num_chunks * chunk_size - variance.numel()
            variance = torch.cat([variance, variance.new_full((pad,), float("nan"))])
            mean = torch.cat([mean, mean.new_full((pad,), float("nan"))])
            row_variance = variance.view(self.num_chunks, chunk_size).nanmean(0)
            row_mean = mean.view(self.num_chunks, chunk_size).nanmean(0)
            with torch.no_grad():
                inputs = self._chunk_inputs(self.embeddings[0])
                second_moment = self.body(inputs).pow(2).mean().item()
            hyperfan_head_(
                self.head.weight, self.head.bias, row_variance, row_mean, second_moment, generator
            )

    def _chunk_inputs(self, z: torch.Tensor) -> torch.Tensor:
        """``z (e,)`` or ``(b, e)`` -> ``(num_chunks, e + e_c)`` or ``(b, num_chunks, e + e_c)``."""
        chunks = self.chunk_embeddings
        if z.dim() == 2:
            chunks = chunks.expand(z.shape[0], *chunks.shape)
        z = z.unsqueeze(-2).expand(*z.shape[:-1], self.num_chunks, z.shape[-1])
        return torch.cat([z, chunks], dim=-1)

    def generate_flat(
        self, z: torch.Tensor | None = None, task: int | torch.Tensor = 0
    ) -> torch.Tensor:
        """Generated target parameters ``(p,)`` (or ``(b, p)`` for batched ``z``/``task``)."""
        z = select_embedding(self.embeddings, z, task)
        chunks = self.head(self.body(self._chunk_inputs(z)))  # (..., num_chunks, chunk_size)
        flat = chunks.reshape(*chunks.shape[:-2], self.num_chunks * self.chunk_size)
        return flat[..., : self._target.num_params]
