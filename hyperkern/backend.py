"""Which implementation runs: the Triton kernels on CUDA tensors, the reference elsewhere."""

from __future__ import annotations

import importlib.util

import torch

BACKENDS = ("auto", "torch", "triton")
_TRITON: bool | None = None


def triton_available() -> bool:
    """Whether the ``triton`` package is installed (checked once, without importing it)."""
    global _TRITON
    if _TRITON is None:
        _TRITON = importlib.util.find_spec("triton") is not None
    return _TRITON


def check_backend(backend: object) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def resolve(backend: str, device: torch.device) -> bool:
    """Whether ``backend`` runs the Triton kernels on ``device``: ``"auto"`` picks them on CUDA
    when triton is installed; ``"triton"`` insists (CPU tensors then need
    ``TRITON_INTERPRET=1``). Pure Python: cheap, and constant under ``torch.compile``."""
    check_backend(backend)
    if backend == "torch":
        return False
    if backend == "auto":
        return device.type == "cuda" and triton_available()
    if not triton_available():
        raise RuntimeError("backend='triton' needs the triton package (pip install triton)")
    return True
