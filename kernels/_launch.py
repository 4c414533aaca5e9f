"""The one launch guard every kernel entry goes through."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from hyperkern._shared import interpreting


def guard(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Contiguous copies (where needed) of tensors that all live on one device the kernels can
    run on: CUDA, or the CPU under ``TRITON_INTERPRET=1``. ``ValueError`` otherwise."""
    device = tensors[0].device
    for t in tensors:
        if t.device != device:
            raise ValueError(f"kernel operands must share one device, got {t.device} and {device}")
    if device.type != "cuda" and not interpreting():
        raise ValueError(
            f"tensors on {device}: the Triton kernels need CUDA tensors, or CPU tensors with "
            "TRITON_INTERPRET=1 set before triton is imported; use backend='torch' on CPU"
        )
    return tuple(t.contiguous() for t in tensors)


def on_device(t: Tensor) -> contextlib.AbstractContextManager:
    """Make ``t``'s CUDA device current for a launch (Triton launches on the current device)."""
    if t.device.type == "cuda":
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()
