"""Templated index tuples: fixed columns from a template, the rest learned (hyperkern.template)."""

from __future__ import annotations

import pytest
import torch

import hyperkern
from tests.grid import assert_close, grid
from tests.helpers import BACKENDS

N_OUT, N_IN, M = 5, 11, 3


def _row_template(rows=range(N_OUT)):
    """Every listed output row gets ``M`` means; column 1 (the input position) is learned."""
    rows = torch.tensor(list(rows)).repeat_interleave(M)
    return torch.stack([rows, torch.zeros_like(rows)], dim=1)


def _layer(backend, rows=range(N_OUT), **options):
    torch.manual_seed(0)
    template = _row_template(rows)
    return hyperkern.SparseLayer(
        (N_IN,),
        (N_OUT,),
        k=len(template),
        template=template,
        learn=(1,),
        context_size=M,
        backend=backend,
        **options,
    ).double()


def _weight(layer, generator=None):
    eye = torch.eye(N_IN, dtype=torch.float64)
    return layer(eye, generator=generator).T  # (out, in)


@grid(backend=BACKENDS)
def test_entries_stay_in_their_template_rows(backend):
    layer = _layer(backend, rows=(0, 2, 4))
    assert layer.means.shape == (9, 1)
    for training in (True, False):
        layer.train(training)
        w = _weight(layer, generator=1 if training else None)
        assert (w[[1, 3]] == 0).all()
        assert (w[[0, 2, 4]] != 0).any(dim=1).all()


@grid(backend=BACKENDS)
def test_eval_has_at_most_m_entries_per_row(backend):
    layer = _layer(backend).eval()
    w = layer.dense_weight()
    assert w.shape == (N_OUT, N_IN)
    assert ((w != 0).sum(1) <= M).all()
    expected = torch.zeros(N_OUT, N_IN, dtype=torch.float64)
    columns = layer.index_means().round().long()[:, 0]
    expected.index_put_((_row_template()[:, 0], columns), layer.values.detach(), accumulate=True)
    assert_close(w, expected)


def test_backends_agree_and_gradients_reach_the_learned_columns():
    results = []
    for backend in ("torch", "triton"):
        layer = _layer(backend)
        x = torch.randn(4, N_IN, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        y = layer(x, generator=7)
        y.square().sum().backward()
        results.append((y, layer.means.grad, layer.sigmas.grad, layer.values.grad))
        assert layer.means.grad.abs().sum() > 0
    for got, want in zip(*results, strict=True):
        assert_close(got, want, scale=10)


@grid(backend=BACKENDS)
def test_hyper_layer_takes_means_of_the_learned_columns(backend):
    k = N_OUT * M

    class Source(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(N_IN, k * 3)

        def forward(self, x):
            out = self.net(x).view(-1, k, 3)
            return out[..., :1], out[..., 1], out[..., 2]

    torch.manual_seed(0)
    layer = hyperkern.SparseHyperLayer(
        (N_IN,),
        (N_OUT,),
        k=k,
        source=Source(),
        template=_row_template(),
        learn=(1,),
        context_size=M,
        backend=backend,
    )
    y = layer(torch.randn(3, N_IN), generator=0)
    assert y.shape == (3, N_OUT) and torch.isfinite(y).all()
    y.sum().backward()
    assert layer.source.net.weight.grad.abs().sum() > 0


def test_functional_form_equals_the_module():
    layer = _layer("torch")
    x = torch.randn(2, N_IN, dtype=torch.float64)
    y = hyperkern.sparse_layer(
        x,
        layer.means,
        layer.sigmas,
        layer.values,
        (N_OUT,),
        context_size=M,
        template=layer.template,
        learn=(1,),
        generator=5,
        backend="torch",
    )
    assert_close(y, layer(x, generator=5))


@pytest.mark.parametrize(
    ("template", "learn", "error", "match"),
    [
        (_row_template().int(), (1,), TypeError, "int64"),
        (_row_template()[:-1], (1,), ValueError, r"shape \(k, r\)"),
        (_row_template(), (2,), ValueError, "learn"),
        (_row_template(), 1, TypeError, "learn"),
        (_row_template() + N_OUT, (1,), ValueError, "template column 0"),
        (None, (1,), ValueError, "needs a template"),
    ],
)
def test_bad_templates_name_the_argument(template, learn, error, match):
    with pytest.raises(error, match=match):
        hyperkern.SparseLayer((N_IN,), (N_OUT,), k=N_OUT * M, template=template, learn=learn)
