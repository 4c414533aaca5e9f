"""Target-network plumbing: parameter layout of any ``nn.Module`` and running it on generated
tensors through :func:`torch.func.functional_call` (the graph to the generator stays intact)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap


@dataclass(frozen=True)
class ParamSpec:
    """One target parameter: its dotted ``name``, ``shape`` and slice ``[offset, offset+numel)``
    of the flat generated vector."""

    name: str
    shape: tuple[int, ...]
    offset: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def param_specs(module: nn.Module) -> list[ParamSpec]:
    """List the parameters of ``module`` in ``named_parameters()`` order with flat offsets."""
    specs, offset = [], 0
    for name, param in module.named_parameters():
        specs.append(ParamSpec(name, tuple(param.shape), offset))
        offset += param.numel()
    return specs


def count_params(module_or_specs: nn.Module | list[ParamSpec]) -> int:
    """Total number of scalars the hypernetwork must generate for the target."""
    specs = (
        param_specs(module_or_specs) if isinstance(module_or_specs, nn.Module) else module_or_specs
    )
    return sum(spec.numel for spec in specs)


def unflatten_params(flat: torch.Tensor, specs: list[ParamSpec]) -> dict[str, torch.Tensor]:
    """Split generated scalars into named target tensors (views, graph preserved).

    Args:
        flat: ``(p,)`` for one weight set or ``(b, p)`` for ``b`` per-sample weight sets, with
            ``p = count_params(specs)``.
        specs: layout from :func:`param_specs`.

    Returns:
        ``{name: (*shape)}`` or ``{name: (b, *shape)}``.
    """
    total = count_params(specs)
    if flat.dim() not in (1, 2) or flat.shape[-1] != total:
        raise ValueError(
            f"flat must have shape (p,) or (b, p) with p={total}, got {tuple(flat.shape)}"
        )
    lead = flat.shape[:-1]
    return {
        spec.name: flat[..., spec.offset : spec.offset + spec.numel].reshape(*lead, *spec.shape)
        for spec in specs
    }


def flatten_params(params: Mapping[str, torch.Tensor], specs: list[ParamSpec]) -> torch.Tensor:
    """Inverse of :func:`unflatten_params` for one weight set: ``{name: shape}`` -> ``(p,)``."""
    return torch.cat([params[spec.name].reshape(-1) for spec in specs])


def functional_forward(
    module: nn.Module, params: Mapping[str, torch.Tensor], *args: Any, **kwargs: Any
) -> Any:
    """Run ``module(*args, **kwargs)`` with its parameters replaced by ``params``.

    Every parameter of ``module`` must be given (strict), so a missing generated tensor is an
    error rather than a silent fall-back to the module's own, untrained weights. Buffers are
    taken from the module.
    """
    names = {name for name, _ in module.named_parameters()}
    missing = names - set(params)
    if missing:
        raise ValueError(f"params is missing target parameters {sorted(missing)}")
    return functional_call(module, dict(params), args, kwargs)


def per_sample_forward(
    module: nn.Module, params: Mapping[str, torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """Run ``module`` once per sample with its own weight set, vectorised by ``torch.func.vmap``.

    Args:
        module: target network, called on one sample at a time as a batch of one,
            ``x[b:b+1]`` of shape ``(1, *in)`` (so batch-first layers such as ``nn.Flatten`` and
            convolutions behave as usual).
        params: ``{name: (b, *shape)}``, e.g. :func:`unflatten_params` of ``(b, p)``.
        x: inputs ``(b, *in)``.

    Returns:
        ``(b, *out)`` with ``out[b] = module[params[b]](x[b])``.
    """

    def one_sample(p: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
        return functional_forward(module, p, xb.unsqueeze(0)).squeeze(0)

    return vmap(one_sample)(dict(params), x)


class TargetHolder:
    """Keeps a target module out of the hypernetwork's registered submodules.

    The target's own parameters are never used or trained (only their shapes are), so they
    must not show up in the hypernetwork's ``parameters()`` or ``state_dict()``.
    """

    def __init__(self, module: nn.Module) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"target must be an nn.Module, got {type(module).__name__}")
        self.module = module
        self.specs = param_specs(module)
        if not self.specs:
            raise ValueError("target has no parameters to generate")
        self.num_params = count_params(self.specs)

    def __call__(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``flat (p,)`` -> ``module(x)``; ``flat (b, p)`` -> per-sample ``module_b(x[b])``."""
        params = unflatten_params(flat, self.specs)
        if flat.dim() == 1:
            return functional_forward(self.module, params, x)
        if x.shape[0] != flat.shape[0]:
            raise ValueError(f"x has batch {x.shape[0]} but flat has {flat.shape[0]} weight sets")
        return per_sample_forward(self.module, params, x)
