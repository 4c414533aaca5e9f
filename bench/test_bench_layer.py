"""Whole sparse layer, one training step (forward + backward; no optimiser).

One W ``(n_out, n_in)`` with ``k`` free means shared by a batch of ``b`` rows: transform, sample,
duplicate mask, proportions, contraction, backward to the input, means, sigmas and values.
Implementations: hyperkern Triton, hyperkern plain torch, ``torch_sparse`` (hyperkern's torch
proportions + ``torch.sparse.mm``), ``dense_prop`` (the original code: probability-space dense
proportions + ``torch.sparse.mm``), ``dense_prop_compiled`` (the same under ``torch.compile``,
CUDA only). Sweeps: k (means), batch.
"""

import pytest
import torch
from inputs import layer_inputs
from measure import fits_or_skip, run_benchmark
from peers import layer_fn, train_step
from sweeps import dense_elements

HK_GROUP = "layer_train_step"
IMPLS = ["triton", "torch", "torch_sparse", "dense_prop", "dense_prop_compiled"]


@pytest.mark.parametrize("impl", IMPLS)
def test_layer_train_step(benchmark, impl, hk_case, hk_device, hk_rounds, hk_memory, hk_generator):
    fn = layer_fn(impl, hk_case, hk_device)
    if impl != "triton" and hk_case.chunk_size is None:
        fits_or_skip(dense_elements(hk_case, instances=1) * 4 * 8, hk_device, "(P, k) matrix")
    x, leaves, dy = layer_inputs(hk_case, hk_device, hk_generator)
    x.requires_grad_(True)  # a layer inside a network also back-propagates to its input
    result = run_benchmark(
        benchmark, lambda: train_step(fn, x, leaves, dy), group="layer train step",
        case=hk_case, impl=impl, device=hk_device, rounds=hk_rounds, tracker=hk_memory,
    )  # fmt: skip
    if impl != "torch" and hk_case.points <= 4096:
        expected = train_step(layer_fn("torch", hk_case, hk_device), x, leaves, dy)
        for got, want in zip(result, expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4)
