"""What one eager training step of a layer issues: no host syncs, a handful of ops.

Counted with a ``TorchDispatchMode`` on CPU: ``aten._local_scalar_dense`` is a host read of a
device value and ``aten.lift_fresh`` a tensor built from a Python list (on CUDA both block the
host). Custom ops count as one op each (their implementations run below the mode).
"""

from __future__ import annotations

import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hyperkern import SparseHyperLayer, SparseLayer, SparseLinear, sparse_layer
from tests.helpers import BACKENDS

HOST_SYNCS = ("aten._local_scalar_dense", "aten.lift_fresh", "aten.item")


class CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def _count_step(layer: torch.nn.Module, x: torch.Tensor) -> collections.Counter:
    layer(x, generator=0).sum().backward()  # warm: constants cached, autotune done
    layer.zero_grad(set_to_none=True)
    x.grad = None
    with CountOps() as mode:
        layer(x, generator=1).sum().backward()
    return mode.counts


def _syncs(counts: collections.Counter) -> dict[str, int]:
    return {name: counts[name] for name in HOST_SYNCS if counts[name]}


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_step_has_no_host_sync_and_few_ops(backend):
    torch.manual_seed(0)
    layer = SparseLayer(in_shape=(64,), out_shape=(64,), k=64, backend=backend)
    counts = _count_step(layer, torch.randn(8, 64, requires_grad=True))
    assert _syncs(counts) == {}
    assert sum(counts.values()) <= 30, counts


@pytest.mark.parametrize("backend", BACKENDS)
def test_hyper_and_linear_layers_have_no_host_sync(backend):
    torch.manual_seed(0)
    source = torch.nn.Sequential(torch.nn.Linear(12, 5 * 6))

    def params(x):
        out = source(x).view(x.shape[0], 5, 6)
        return out[..., :2], out[..., 2], out[..., 3]

    class Source(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = source

        def forward(self, x):
            return params(x)

    hyper = SparseHyperLayer((12,), (7,), k=5, source=Source(), backend=backend)
    linear = SparseLinear(12, 7, k=9, backend=backend)
    for layer in (hyper, linear):
        counts = _count_step(layer, torch.randn(4, 12, requires_grad=True))
        assert _syncs(counts) == {}, (type(layer).__name__, counts)


def test_validate_is_the_opt_in_host_read():
    x, means = torch.randn(3, 5), torch.randn(4, 2)
    sigmas, values = torch.zeros(4), torch.randn(4)
    with CountOps() as mode:
        sparse_layer(x, means, sigmas, values, (6,), generator=0, validate=True)
    assert mode.counts["aten._local_scalar_dense"] == 3  # means, sigmas, values
