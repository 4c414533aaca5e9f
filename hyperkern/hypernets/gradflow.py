"""Automated version of the tutorial's three-breakpoint debugging of hypernetwork graphs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

LossOutput = torch.Tensor | tuple[torch.Tensor, Mapping[str, torch.Tensor]]


@dataclass
class GradientFlowReport:
    """What one checked step found.

    Attributes:
        no_grad: trainable parameters whose ``.grad`` stayed None after backward.
        zero_grad: trainable parameters whose gradient is exactly zero everywhere.
        detached: generated tensors that are not connected to any hypernetwork parameter
            (no ``grad_fn``, or no path back to a parameter), e.g. written through ``.data``
            or wrapped in a fresh ``nn.Parameter``.
        not_updated: parameters an optimizer step left unchanged (only when an optimizer is given).
        loss: the loss value of the checked step.
    """

    no_grad: list[str] = field(default_factory=list)
    zero_grad: list[str] = field(default_factory=list)
    detached: list[str] = field(default_factory=list)
    not_updated: list[str] = field(default_factory=list)
    loss: float = float("nan")

    @property
    def ok(self) -> bool:
        return not (self.no_grad or self.zero_grad or self.detached or self.not_updated)

    def __str__(self) -> str:
        if self.ok:
            return f"gradient flow ok (loss {self.loss:.4g})"
        parts = [
            f"{label}: {', '.join(names)}"
            for label, names in (
                ("no gradient", self.no_grad),
                ("zero gradient", self.zero_grad),
                ("detached generated tensors", self.detached),
                ("not updated by the optimizer", self.not_updated),
            )
            if names
        ]
        return "gradient flow broken: " + "; ".join(parts)


def _detached(
    generated: Mapping[str, torch.Tensor], params: list[tuple[str, nn.Parameter]]
) -> list[str]:
    leaves = [p for _, p in params]
    broken = []
    for name, tensor in generated.items():
        if not tensor.requires_grad or tensor.grad_fn is None:
            broken.append(name)
            continue
        grads = torch.autograd.grad(tensor.sum(), leaves, retain_graph=True, allow_unused=True)
        if all(g is None for g in grads):
            broken.append(name)
    return broken


def check_gradient_flow(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], LossOutput],
    optimizer: torch.optim.Optimizer | None = None,
) -> GradientFlowReport:
    """Run one step of ``loss_fn(model)`` and report where the hypernetwork graph is broken.

    Args:
        model: the hypernetwork; all its trainable parameters are expected to get a gradient.
        loss_fn: returns the scalar loss, or ``(loss, generated)`` where ``generated`` maps names
            to the generated weight tensors fed to the target network; each must lead back to
            at least one parameter of ``model``.
        optimizer: if given, ``optimizer.step()`` is taken and parameters it left unchanged are
            reported (the tutorial's third breakpoint). Existing ``.grad`` values are cleared
            first either way.

    Returns:
        A :class:`GradientFlowReport`; ``report.ok`` is True when nothing is broken.
    """
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    for _, param in params:
        param.grad = None
    output = loss_fn(model)
    loss, generated = output if isinstance(output, tuple) else (output, {})
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise ValueError("loss_fn must return a scalar tensor (or (loss, generated))")
    report = GradientFlowReport(loss=float(loss.detach()))
    report.detached = _detached(generated, params)
    if loss.requires_grad:
        loss.backward()
    for name, param in params:
        if param.grad is None:
            report.no_grad.append(name)
        elif not bool(param.grad.ne(0).any()):
            report.zero_grad.append(name)
    if optimizer is not None:
        before = {name: param.detach().clone() for name, param in params}
        optimizer.step()
        report.not_updated = [
            name for name, param in params if torch.equal(before[name], param.detach())
        ]
    return report
