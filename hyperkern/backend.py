"""Backend dispatch: the Triton kernels on CUDA tensors, the plain-torch reference elsewhere."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

from hyperkern import reference
from hyperkern.validation import check_backend


def triton_available() -> bool:
    """Whether ``triton`` imports (it does not on every platform)."""
    try:
        importlib.import_module("triton")
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, device: torch.device) -> str:
    """``"auto"`` -> ``"triton"`` on CUDA with triton installed, else ``"torch"``."""
    check_backend(backend)
    if backend == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    return backend


def implementation(name: str, backend: str, device: torch.device) -> Callable:
    """The function ``name`` from :mod:`hyperkern.reference` or :mod:`hyperkern.kernels`."""
    if resolve_backend(backend, device) == "torch":
        return getattr(reference, name)
    if not triton_available():
        raise RuntimeError("backend='triton' needs the triton package (pip install triton)")
    kernels = importlib.import_module("hyperkern.kernels")
    fn = getattr(kernels, name, None)
    if fn is None:
        raise NotImplementedError(f"hyperkern has no Triton kernel for {name!r} yet")
    return fn
