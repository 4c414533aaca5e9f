"""Input checks shared by the functional API and the modules. Errors name the argument."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from hyperkern._shared import MAX_DIM, linear_fits
from hyperkern.backend import check_backend
from hyperkern.seeds import check_generator

#: what the ops take; float16 and bfloat16 are computed in float32
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_FLOAT_NAMES = "float16, bfloat16, float32 or float64"

__all__ = [
    "check_backend",
    "check_contract_inputs",
    "check_proportions_inputs",
    "check_count",
    "check_finite",
    "check_generator",
    "check_hyper_linear_inputs",
    "check_index_space",
    "check_optional_count",
    "check_positive_shape",
    "check_region",
    "check_same_device",
    "check_same_dtype",
    "check_shape",
    "check_tensor",
]


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
    if max(dims) > MAX_DIM:
        raise ValueError(f"every dimension of W must be at most 2**31 - 1, got dims {dims}")


def check_finite(name: str, t: torch.Tensor) -> None:
    """Opt-in (``validate=True``): reads a value back to the host. Eager only: under
    ``torch.compile`` the data-dependent check would break the graph."""
    if torch.compiler.is_compiling():
        return
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf; parameters must be finite")


def check_same_device(**tensors: torch.Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(f"all tensors must be on one device, got {devices}")


def check_same_dtype(**tensors: torch.Tensor) -> None:
    dtypes = {name: t.dtype for name, t in tensors.items()}
    if len(set(dtypes.values())) > 1:
        raise TypeError(f"all tensors must share one floating dtype, got {dtypes}")


def _check_size(name: str, size: int | None) -> None:
    if size is None:
        return
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"{name} must be an int or None, got {type(size).__name__}")
    if size < 1:
        raise ValueError(f"{name} must be >= 1 or None, got {size}")


def check_proportions_inputs(
    points, mu, sigma, values, duplicates, context_size, chunk_size
) -> None:
    """Raise TypeError/ValueError naming the first bad argument."""
    named = {"points": points, "mu": mu, "sigma": sigma, "values": values, "duplicates": duplicates}
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if points.dim() != 4:
        raise ValueError(f"points must have shape (B, k, S, r), got {tuple(points.shape)}")
    if points.dtype == torch.bool or points.is_complex():
        raise TypeError(f"points must be an integer or floating tensor, got {points.dtype}")
    if mu.dtype not in FLOAT_DTYPES:
        raise TypeError(f"mu must be {_FLOAT_NAMES}, got {mu.dtype}")
    for name in ("sigma", "values"):
        if named[name].dtype != mu.dtype:
            raise TypeError(
                f"{name} must have the dtype of mu ({mu.dtype}), got {named[name].dtype}"
            )
    if duplicates.dtype != torch.bool:
        raise TypeError(f"duplicates must be a bool tensor, got {duplicates.dtype}")
    B, k, S, r = points.shape
    shapes = {"mu": (B, k, r), "sigma": (B, k, r), "values": (B, k), "duplicates": (B, k, S)}
    letters = {
        "mu": "(B, k, r)",
        "sigma": "(B, k, r)",
        "values": "(B, k)",
        "duplicates": "(B, k, S)",
    }
    for name, shape in shapes.items():
        if tuple(named[name].shape) != shape:
            raise ValueError(
                f"{name} must have shape {letters[name]} = {shape} to match points "
                f"(B, k, S, r) = {tuple(points.shape)}, got {tuple(named[name].shape)}"
            )
    for name, t in named.items():
        if t.device != mu.device:
            raise ValueError(f"{name} is on {t.device} but mu is on {mu.device}")
    _check_size("context_size", context_size)
    _check_size("chunk_size", chunk_size)


def check_contract_inputs(
    rows: object, cols: object, vprime: object, x: object, n_out: object
) -> None:
    for name, t in (("rows", rows), ("cols", cols), ("vprime", vprime), ("x", x)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    for name, t in (("rows", rows), ("cols", cols)):
        if t.dtype != torch.int64:
            raise TypeError(f"{name} must be int64, got dtype {t.dtype}")
    for name, t in (("vprime", vprime), ("x", x)):
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be {_FLOAT_NAMES}, got dtype {t.dtype}")
    if rows.dim() != 2:
        raise ValueError(f"rows must have shape (B, P), got {tuple(rows.shape)}")
    for name, t in (("cols", cols), ("vprime", vprime)):
        if t.shape != rows.shape:
            raise ValueError(
                f"{name} must have the shape of rows (B, P) = {tuple(rows.shape)}, "
                f"got {tuple(t.shape)}"
            )
    if x.dim() not in (2, 3):
        raise ValueError(f"x must have shape (b, n_in) or (b, n_in, c), got {tuple(x.shape)}")
    if rows.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"rows/cols/vprime must have B = 1 (shared W) or B = x.shape[0] = {x.shape[0]}, "
            f"got B = {rows.shape[0]}"
        )
    if not isinstance(n_out, int) or isinstance(n_out, bool) or n_out < 0:
        raise ValueError(f"n_out must be an int >= 0, got {n_out!r}")
    devices = {t.device for t in (rows, cols, vprime, x)}
    if len(devices) > 1:
        raise ValueError(f"rows, cols, vprime and x must be on one device, got {devices}")


def check_hyper_linear_inputs(
    x: torch.Tensor, e: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> int:
    """Validate the arguments of :func:`hyper_linear`; return ``out`` (the output width).

    Raises ``TypeError`` for non-tensors or non-float dtypes (all four must
    share one dtype) and ``ValueError`` for shape or device mismatches.
    """
    named = {"x": x, "e": e, "weight": weight, "bias": bias}
    for name, tensor in named.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be {_FLOAT_NAMES}, got {tensor.dtype}")
    for name, tensor in named.items():
        if tensor.dtype != x.dtype:
            raise TypeError(f"{name} has dtype {tensor.dtype} but x has dtype {x.dtype}")
        if tensor.device != x.device:
            raise ValueError(f"{name} is on {tensor.device} but x is on {x.device}")
    if x.dim() != 2:
        raise ValueError(f"x must have shape (b, in), got {tuple(x.shape)}")
    if e.dim() != 2 or e.shape[0] != x.shape[0]:
        raise ValueError(f"e must have shape (b, e_dim) with b={x.shape[0]}, got {tuple(e.shape)}")
    in_features, e_dim = x.shape[1], e.shape[1]
    if in_features < 1 or e_dim < 1:
        raise ValueError(
            f"x and e need in >= 1 and e_dim >= 1, got in={in_features}, e_dim={e_dim}"
        )
    if weight.dim() != 2 or weight.shape[1] != e_dim or weight.shape[0] % in_features != 0:
        raise ValueError(
            f"weight must have shape (out*in, e_dim) = (out*{in_features}, {e_dim}), "
            f"got {tuple(weight.shape)}"
        )
    out_features = weight.shape[0] // in_features
    if out_features < 1:
        raise ValueError(f"weight must have at least in={in_features} rows, got {weight.shape[0]}")
    if bias.shape != (weight.shape[0],):
        raise ValueError(
            f"bias must have shape (out*in,) = ({weight.shape[0]},), got {tuple(bias.shape)}"
        )
    return out_features
