"""Scaling hypernetwork: learned base weights modulated by generated per-row/column scales."""

from __future__ import annotations

import torch
from torch import nn

from .body import select_embedding
from .init import normal_, seeded_generator
from .target import TargetHolder, functional_forward, per_sample_forward

_MODES = ("row", "column", "both")


class ScalingHypernetwork(nn.Module):
    """``W = W_base · s_row[:, None] · s_col[None, :]`` with scales generated from an embedding.

    Weights with >= 2 dims (``(out, in, *kernel)``) are scaled along dim 0 (rows, ``out``
    scales) and/or dim 1 (columns, ``in`` scales); 1-D parameters are used as learned. The
    scale head is linear in the embedding and starts at ``s ≈ 1``, so the generated network
    starts as the target's own initial weights.

    Args:
        target: ``nn.Module`` whose current parameters become the learned base weights.
        embedding_dim: size ``e`` of the embeddings.
        num_embeddings: rows of the learned embedding table.
        mode: ``"row"``, ``"column"`` or ``"both"``.
        scale_init_std: std of the scale head's weights (small, breaks symmetry).
        seed: seeds every initial value.
    """

    def __init__(
        self,
        target: nn.Module,
        embedding_dim: int = 8,
        num_embeddings: int = 1,
        mode: str = "row",
        scale_init_std: float = 0.01,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        self._target = TargetHolder(target)
        self.mode = mode
        generator = seeded_generator(seed)
        self.embeddings = nn.Parameter(
            torch.randn(num_embeddings, embedding_dim, generator=generator)
        )
        self.base = nn.ParameterList(
            [nn.Parameter(p.detach().clone()) for _, p in target.named_parameters()]
        )
        self._scaled: list[tuple[int, int, int]] = []  # (spec index, rows, cols) per weight
        width = 0
        for index, spec in enumerate(self._target.specs):
            if len(spec.shape) >= 2:
                rows = spec.shape[0] if mode in ("row", "both") else 0
                cols = spec.shape[1] if mode in ("column", "both") else 0
                self._scaled.append((index, rows, cols))
                width += rows + cols
        if width == 0:
            raise ValueError("target has no weight with >= 2 dims to scale")
        self.scale_head = nn.Linear(embedding_dim, width)
        normal_(self.scale_head.weight, scale_init_std, generator)
        nn.init.ones_(self.scale_head.bias)

    @property
    def target(self) -> nn.Module:
        return self._target.module

    def scales(self, z: torch.Tensor | None = None, task: int | torch.Tensor = 0) -> torch.Tensor:
        """All generated scales concatenated: ``(s,)`` or ``(b, s)``."""
        return self.scale_head(select_embedding(self.embeddings, z, task))

    def generate(
        self, z: torch.Tensor | None = None, task: int | torch.Tensor = 0
    ) -> dict[str, torch.Tensor]:
        """Scaled target parameters by name: ``{name: shape}`` or ``{name: (b, *shape)}``."""
        scales = self.scales(z, task)
        lead = scales.shape[:-1]
        params = {
            spec.name: base.expand(*lead, *base.shape)
            for spec, base in zip(self._target.specs, self.base, strict=True)
        }
        start = 0
        for index, rows, cols in self._scaled:
            spec = self._target.specs[index]
            weight = self.base[index]
            trailing = (1,) * (len(spec.shape) - 2)
            if rows:
                s_row = scales[..., start : start + rows]
                weight = weight * s_row.reshape(*lead, rows, 1, *trailing)
                start += rows
            if cols:
                s_col = scales[..., start : start + cols]
                weight = weight * s_col.reshape(*lead, 1, cols, *trailing)
                start += cols
            params[spec.name] = weight
        return params

    def forward(
        self, x: torch.Tensor, z: torch.Tensor | None = None, task: int | torch.Tensor = 0
    ) -> torch.Tensor:
        """Run the target on ``x`` with scaled weights (per sample for batched ``z``/``task``)."""
        scales_batched = (z is not None and z.dim() == 2) or (
            isinstance(task, torch.Tensor) and task.dim() == 1
        )
        params = self.generate(z, task)
        if scales_batched:
            return per_sample_forward(self.target, params, x)
        return functional_forward(self.target, params, x)
