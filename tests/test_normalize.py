"""Row-normalised sparse W (``normalize=`` / :func:`hyperkern.ops.normalize_rows`)."""

from __future__ import annotations

import pytest
import torch

import hyperkern
from hyperkern import ops
from tests.grid import assert_close, grid
from tests.helpers import BACKENDS


def _dense_rows(rows, vprime, n_rows, mode, keep):
    """One row at a time, the plain definition."""
    out = torch.zeros_like(vprime)
    for b in range(rows.shape[0]):
        for r in range(n_rows):
            members = (rows[b] == r) & keep[b]
            if not members.any():
                continue
            entries = vprime[b][members]
            out[b][members] = (
                torch.softmax(entries, 0) if mode == "softmax" else entries / entries.sum()
            )
    return out


@grid(mode=("softmax", "sum"), P=(1, 7, 30))
def test_normalize_rows_matches_the_definition(mode, P):
    g = torch.Generator().manual_seed(P)
    rows = torch.randint(0, 5, (2, P), generator=g)
    vprime = torch.rand(2, P, generator=g, dtype=torch.float64) + 0.1
    keep = torch.rand(2, P, generator=g) > 0.2
    got = ops.normalize_rows(rows, vprime, 5, mode, keep)
    assert_close(got, _dense_rows(rows, vprime, 5, mode, keep))
    assert (got[~keep] == 0).all()


@pytest.mark.parametrize("mode", ["softmax", "sum"])
def test_normalize_rows_gradcheck(mode):
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(0, 4, (2, 9), generator=g)
    vprime = (torch.rand(2, 9, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    keep = torch.rand(2, 9, generator=g) > 0.2
    assert torch.autograd.gradcheck(lambda v: ops.normalize_rows(rows, v, 4, mode, keep), (vprime,))


@grid(backend=BACKENDS, mode=("softmax", "sum"), eval_mode=("round", "expected"))
def test_layer_rows_sum_to_one(backend, mode, eval_mode):
    """Every row of W that has an entry sums to 1, in training and in evaluation."""
    torch.manual_seed(0)
    layer = hyperkern.SparseLayer(
        (9,), (6,), k=10, normalize=mode, backend=backend, eval_mode=eval_mode
    ).double()
    with torch.no_grad():
        layer.values.abs_()
    eye = torch.eye(9, dtype=torch.float64)
    for training in (True, False):
        layer.train(training)
        w = layer(eye, generator=3).T if training else layer(eye).T  # (out, in)
        sums = w.sum(1)
        used = sums != 0
        assert used.any()
        assert_close(sums[used], torch.ones_like(sums[used]), scale=10)


def test_bad_mode_names_the_option():
    with pytest.raises(ValueError, match="normalize"):
        hyperkern.SparseLayer((3,), (3,), k=2, normalize="max")
    with pytest.raises(ValueError, match="mode"):
        ops.normalize_rows(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 1), 1, "max")
