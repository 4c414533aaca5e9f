"""Seeds for the counter-based sampler: every kind of ``generator=`` becomes a ``()`` int64
tensor on the layer's device, without a host sync (docs/algorithm.md §2).

- ``int`` in ``0 .. 2**64 - 1``: the seed itself (the same samples every call);
- ``None``: drawn from torch's global generator of the device (``torch.randint`` on the device:
  under CUDA graph capture torch advances its Philox offset per replay, so each replay samples
  anew);
- ``torch.Generator``: drawn from that generator (on its device, then moved);
- a ``()`` int64 tensor: used as it is (graph- and compile-friendly way to pass your own seed).

Under ``torch.compile`` a ``torch.Generator`` cannot be an argument (dynamo does not trace
generator objects): give it to the module instead (``SparseLayer(..., generator=g)``), which
draws from it outside the traced graph.
"""

from __future__ import annotations

import torch

SEED_HIGH = 2**62  # seeds drawn from a torch generator lie in [0, 2**62)


def check_generator(generator: object) -> None:
    """``TypeError``/``ValueError`` unless ``generator`` is a valid ``generator=`` value."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    if isinstance(generator, bool) or not isinstance(generator, (int, torch.Tensor)):
        raise TypeError(
            "generator must be None, an int seed in [0, 2**64), a torch.Generator or a () int64 "
            f"tensor, got {type(generator).__name__}"
        )
    if isinstance(generator, int) and not 0 <= generator < 2**64:
        raise ValueError(f"generator (an int seed) must lie in [0, 2**64), got {generator}")
    if isinstance(generator, torch.Tensor) and (
        generator.dtype != torch.int64 or generator.dim() != 0
    ):
        raise TypeError(
            f"a seed tensor must be a () int64 tensor, got {generator.dtype} "
            f"of shape {tuple(generator.shape)}"
        )


def seed_tensor(
    generator: torch.Generator | int | torch.Tensor | None, device: torch.device
) -> torch.Tensor:
    """``()`` int64 seed on ``device`` for ``generator`` (see the module docstring)."""
    if isinstance(generator, torch.Tensor):
        return generator.to(device)
    if isinstance(generator, int):
        signed = generator - 2**64 if generator >= 2**63 else generator
        return torch.full((), signed, dtype=torch.int64, device=device)
    if generator is None:
        return torch.randint(SEED_HIGH, (), dtype=torch.int64, device=device)
    if torch.compiler.is_compiling():
        raise TypeError(
            "a torch.Generator cannot be passed through torch.compile; pass an int seed, a seed "
            "tensor, or give the generator to the module (SparseLayer(..., generator=g))"
        )
    seed = torch.randint(
        SEED_HIGH, (), dtype=torch.int64, device=generator.device, generator=generator
    )
    return seed.to(device)


def fold_seed(seed: int, rank: int) -> int:
    """A per-rank seed in ``[0, 2**64)`` from a run's ``seed`` and a process ``rank``.

    Data-parallel ranks that pass the same seed draw identical tuples; fold the rank in so that
    every rank samples its own W, reproducibly (same ``seed`` and ``rank``, same result). The
    mix is SplitMix64's finaliser of ``seed + rank * golden``, so nearby seeds and ranks give
    unrelated streams.
    """
    for name, value in (("seed", seed), ("rank", rank)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    mask = 2**64 - 1
    z = (seed + (rank + 1) * 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)
