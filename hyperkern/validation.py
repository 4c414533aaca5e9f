"""Input checks shared by the functional API and the modules. Errors name the argument."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from hyperkern.reference.keys import linear_fits

BACKENDS = ("auto", "torch", "triton")


def check_tensor(name: str, t: object, ndims: Sequence[int], floating: bool = True) -> None:
    """``TypeError`` unless ``t`` is a tensor (floating if asked); ``ValueError`` unless its rank
    is one of ``ndims``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if floating and not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if t.dim() not in ndims:
        want = " or ".join(str(n) for n in ndims)
        raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(t.shape)}")


def check_shape(name: str, t: torch.Tensor, expected: tuple[int, ...], meaning: str) -> None:
    if tuple(t.shape) != expected:
        raise ValueError(f"{name} must have shape {meaning} = {expected}, got {tuple(t.shape)}")


def check_positive_shape(name: str, shape: object) -> tuple[int, ...]:
    """A non-empty tuple of positive ints."""
    if isinstance(shape, int):
        shape = (shape,)
    try:
        shape = tuple(shape)  # type: ignore[arg-type]
    except TypeError as err:
        raise TypeError(f"{name} must be a sequence of ints, got {shape!r}") from err
    if not shape or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {shape}")
    return shape


def check_optional_count(name: str, value: object, minimum: int) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be None or an int >= {minimum}, got {value!r}")


def check_count(name: str, value: object, minimum: int = 0) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def check_region(region: object, dims: tuple[int, ...]) -> tuple[int, ...] | None:
    """``None`` or ``(r,)`` positive ints each at most the matching size of W."""
    if region is None:
        return None
    region = tuple(region)  # type: ignore[arg-type]
    if len(region) != len(dims):
        raise ValueError(
            f"region must have one size per dimension of W ({len(dims)}), got {region}"
        )
    for d, (size, dim) in enumerate(zip(region, dims, strict=True)):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"region[{d}] must be a positive int, got {size!r}")
        if size > dim:
            raise ValueError(f"region[{d}]={size} is larger than W's dimension {d} of size {dim}")
    return region


def check_index_space(dims: tuple[int, ...]) -> None:
    if not linear_fits(dims):
        raise ValueError(
            f"W's index space {dims} has {math.prod(dims)} tuples: too large for int64 indices"
        )


def check_finite(name: str, t: torch.Tensor) -> None:
    """Eager only: under ``torch.compile`` the data-dependent check would break the graph."""
    if torch.compiler.is_compiling():
        return
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf; parameters must be finite")


def check_generator(generator: object) -> None:
    if generator is not None and not isinstance(generator, (int, torch.Generator)):
        raise TypeError(
            f"generator must be None, an int seed or a torch.Generator, got {generator!r}"
        )


def check_backend(backend: object) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def check_same_device(**tensors: torch.Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(f"all tensors must be on one device, got {devices}")


def check_same_dtype(**tensors: torch.Tensor) -> None:
    dtypes = {name: t.dtype for name, t in tensors.items()}
    if len(set(dtypes.values())) > 1:
        raise TypeError(f"all tensors must share one floating dtype, got {dtypes}")
