"""Differentiable quicksort (hyperkern.sort): exactness, validity, normalisation, gradients."""

from __future__ import annotations

import itertools

import pytest
import torch

from hyperkern.sort import (
    _repeated_vectors_packed,
    bucket_medians,
    half_permutation,
    half_permutation_rows,
    repeated_vectors,
    sample_half_permutations,
    soft_assignment,
    sparse_sort,
    unsort_targets,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _distinct_keys(b: int, n: int, seed: int, spacing: float = 1.0) -> torch.Tensor:
    """Keys that are a random permutation of ``0, spacing, 2 spacing, ...`` per instance."""
    g = _gen(seed)
    perms = torch.stack([torch.randperm(n, generator=g) for _ in range(b)])
    return perms.to(torch.float64) * spacing


@pytest.mark.parametrize("n", [2, 4, 8, 16, 32])
def test_exact_steps_sort_exactly(n):
    keys = torch.randn(5, n, generator=_gen(n), dtype=torch.float64)
    values = torch.randn(5, n, 3, generator=_gen(n + 1), dtype=torch.float64)
    result = sparse_sort(keys, values, n_samples=0)
    order = keys.argsort(dim=1)
    assert torch.equal(result.keys, keys.gather(1, order))
    assert torch.equal(result.values, values.gather(1, order.unsqueeze(-1).expand_as(values)))


@pytest.mark.parametrize("n", [4, 8, 16])
@pytest.mark.parametrize("method", ["sparse", "dense"])
def test_well_separated_keys_sort_with_samples(n, method):
    keys = _distinct_keys(6, n, seed=n, spacing=10.0)  # sigmoid(+-50) saturates
    values = torch.randn(6, n, 2, 2, generator=_gen(3), dtype=torch.float64)
    result = sparse_sort(keys, values, n_samples=2 * n, generator=7, backend=method)
    order = keys.argsort(dim=1)
    expected = values.gather(1, order.view(6, n, 1, 1).expand_as(values))
    torch.testing.assert_close(result.values, expected, atol=1e-12, rtol=0)


def test_soft_sort_is_not_exact_for_close_keys():
    keys = torch.randn(4, 8, generator=_gen(0), dtype=torch.float64) * 0.05
    values = keys.unsqueeze(-1)
    result = sparse_sort(keys, values, n_samples=8, generator=1)
    assert (result.values.squeeze(-1) - keys.sort(dim=1).values).abs().max() > 1e-3


def test_bucket_medians_and_soft_assignment():
    keys = torch.tensor([[4.0, 1.0, 3.0, 2.0, 10.0, 40.0, 20.0, 30.0]])
    med0 = bucket_medians(keys, 0)
    assert torch.equal(med0, torch.full((1, 8), 7.0))  # (4 + 10) / 2
    med1 = bucket_medians(keys, 1)
    assert torch.equal(med1, torch.tensor([[2.5] * 4 + [25.0] * 4]))
    soft = soft_assignment(keys, 1, certainty=10.0)
    torch.testing.assert_close(soft, torch.sigmoid((keys - med1) * 10.0))


@pytest.mark.parametrize("n", [2, 8, 16])
def test_sampled_vectors_are_valid_half_permutations(n):
    keys = torch.randn(7, n, generator=_gen(n))
    keys[0] = 0.0  # all ties: the exact vector must still be valid
    for depth in range(n.bit_length() - 1):
        choices = sample_half_permutations(keys, depth, n_samples=25, generator=_gen(depth))
        assert choices.shape == (7, 26, n) and choices.dtype == torch.bool
        per_bucket = choices.reshape(7, 26, 2**depth, -1)
        half = torch.full((7, 26, 2**depth), per_bucket.shape[-1] // 2)
        assert torch.equal(per_bucket.sum(-1), half)
        rows = half_permutation_rows(choices, depth)
        # a permutation that keeps every element inside its own bucket
        assert torch.equal(rows.sort(dim=-1).values, torch.arange(n).expand(7, 26, n))
        c = n >> depth
        assert torch.equal(rows // c, torch.arange(n).expand(7, 26, n) // c)


def test_first_sample_is_rounded_soft_assignment():
    keys = torch.randn(9, 16, generator=_gen(4))
    for depth in range(4):
        choices = sample_half_permutations(keys, depth, n_samples=3, generator=0)
        assert torch.equal(choices[:, 0], soft_assignment(keys, depth).round().bool())


def test_rows_follow_algorithm_2():
    # o = (1, 0, 0, 1): zeros keep their order in the top half, ones in the bottom half
    rows = half_permutation_rows(torch.tensor([[1, 0, 0, 1]]), depth=0)
    assert rows.tolist() == [[2, 0, 1, 3]]
    rows = half_permutation_rows(torch.tensor([[1, 0, 0, 1]]), depth=1)
    assert rows.tolist() == [[1, 0, 2, 3]]


@pytest.mark.parametrize("method", ["sparse", "dense"])
def test_columns_sum_to_one_and_contraction_matches_dense(method):
    keys = torch.randn(5, 8, generator=_gen(1), dtype=torch.float64)
    values = torch.randn(5, 8, 4, generator=_gen(2), dtype=torch.float64)
    for depth in range(3):
        step = half_permutation(keys, depth, n_samples=12, generator=depth, certainty=2.0)
        dense = step.dense()
        torch.testing.assert_close(dense.sum(dim=1), torch.ones(5, 8, dtype=torch.float64))
        torch.testing.assert_close(step.apply(values, method), dense @ values)
        torch.testing.assert_close(step.apply_transpose(values, method), dense.mT @ values)


def test_duplicates_never_double_count():
    # n = 2 has only two valid vectors, so many samples repeat them
    keys = torch.tensor([[0.3, -0.2], [1.0, 2.0]], dtype=torch.float64)
    step = half_permutation(keys, 0, n_samples=30, generator=0, certainty=1.0)
    nonzero = step.weights[..., 0] > 0
    assert nonzero.sum(dim=1).tolist() == [2, 2]
    # the matrix equals the explicit mixture over the distinct vectors
    o = torch.sigmoid((keys - keys.mean(dim=1, keepdim=True)) * 1.0)
    p_identity = (1 - o[:, 0]) * o[:, 1]
    p_swap = o[:, 0] * (1 - o[:, 1])
    w_identity = p_identity / (p_identity + p_swap)
    dense = step.dense()
    torch.testing.assert_close(dense[:, 0, 0], w_identity)
    torch.testing.assert_close(dense[:, 1, 0], 1 - w_identity)


def test_repeated_vectors_marks_later_copies_only():
    choices = torch.tensor([[[0, 1, 1, 0], [1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1]]])
    assert repeated_vectors(choices.bool()).tolist() == [[False, False, True, True, True]]


def test_packed_duplicate_path_matches_key_machinery():
    keys = torch.randn(4, 16, generator=_gen(9))
    choices = sample_half_permutations(keys, 3, n_samples=60, generator=1)  # many repeats
    expected = repeated_vectors(choices)
    assert expected.any()
    assert torch.equal(_repeated_vectors_packed(choices), expected)


def test_long_vectors_use_packed_path():
    keys = torch.randn(2, 128, generator=_gen(2))
    step = half_permutation(keys, 6, n_samples=40, generator=3)  # buckets of 2: repeats
    assert (step.weights[..., 0] == 0).any()
    torch.testing.assert_close(step.dense().sum(dim=1), torch.ones(2, 128))


def test_gradcheck_keys_float64():
    keys = torch.randn(2, 4, generator=_gen(5), dtype=torch.float64, requires_grad=True)
    values = torch.randn(2, 4, 3, generator=_gen(6), dtype=torch.float64, requires_grad=True)

    target = torch.randn(2, 4, 3, generator=_gen(7), dtype=torch.float64)

    def run(k, v):
        result = sparse_sort(k, v, n_samples=4, generator=11, certainty=1.0, intermediate=True)
        return result.values, unsort_targets(target, result.steps)[0]

    assert torch.autograd.gradcheck(run, (keys, values))


def test_gradients_reach_keys_and_move_them_toward_the_order():
    # the keys put item 1 first, the target wants item 0 first: descent must swap the keys
    keys = torch.tensor([[0.1, -0.1]], requires_grad=True)
    values = torch.tensor([[[1.0], [0.0]]])
    result = sparse_sort(keys, values, n_samples=4, generator=0)
    loss = (result.values - values).pow(2).sum()
    loss.backward()
    assert keys.grad is not None
    assert keys.grad[0, 0] > 0 and keys.grad[0, 1] < 0


def test_unsort_targets_invert_the_exact_sort():
    keys = torch.randn(3, 8, generator=_gen(8), dtype=torch.float64)
    values = torch.randn(3, 8, 2, generator=_gen(9), dtype=torch.float64)
    result = sparse_sort(keys, values, n_samples=0, intermediate=True)
    assert len(result.steps) == 3 and len(result.intermediates) == 4
    targets = unsort_targets(result.values, result.steps)
    for x, t in zip(result.intermediates, targets, strict=True):
        torch.testing.assert_close(x, t)


def test_same_seed_same_result_and_different_seed_differs():
    keys = torch.randn(4, 16, generator=_gen(1)) * 0.1
    values = torch.randn(4, 16, 5, generator=_gen(2))
    a = sparse_sort(keys, values, n_samples=8, generator=_gen(3))
    b = sparse_sort(keys, values, n_samples=8, generator=_gen(3))
    c = sparse_sort(keys, values, n_samples=8, generator=_gen(4))
    assert torch.equal(a.values, b.values)
    assert not torch.equal(a.values, c.values)
    seeded = [sparse_sort(keys, values, 8, 42).values for _ in range(2)]
    assert torch.equal(seeded[0], seeded[1])


def test_awkward_sizes():
    one = sparse_sort(torch.randn(3, 1), torch.randn(3, 1, 2), n_samples=4, generator=0)
    assert one.values.shape == (3, 1, 2)
    empty = sparse_sort(torch.randn(0, 8), torch.randn(0, 8, 3), n_samples=4, generator=0)
    assert empty.values.shape == (0, 8, 3)
    no_features = sparse_sort(torch.randn(2, 4), torch.randn(2, 4), n_samples=2, generator=0)
    assert no_features.values.shape == (2, 4)


@pytest.mark.parametrize(
    ("keys", "values", "error"),
    [
        (torch.randn(2, 6), torch.randn(2, 6), ValueError),  # not a power of two
        (torch.randn(8), torch.randn(8), ValueError),  # no batch dim
        (torch.randint(0, 5, (2, 4)), torch.randn(2, 4), TypeError),  # integer keys
        (torch.randn(2, 4), torch.randn(3, 4), ValueError),  # batch mismatch
        (torch.randn(2, 4), torch.randn(2, 8), ValueError),  # n mismatch
        (torch.randn(2, 4), torch.randint(0, 2, (2, 4)), TypeError),  # integer values
        ([[0.0, 1.0]], torch.randn(1, 2), TypeError),  # not a tensor
    ],
)
def test_bad_inputs_raise(keys, values, error):
    with pytest.raises(error):
        sparse_sort(keys, values, n_samples=2, generator=0)


def test_bad_options_raise():
    keys, values = torch.randn(2, 4), torch.randn(2, 4, 1)
    with pytest.raises(ValueError, match="n_samples"):
        sparse_sort(keys, values, n_samples=-1)
    with pytest.raises(TypeError, match="generator"):
        sparse_sort(keys, values, n_samples=1, generator="seed")
    with pytest.raises(ValueError, match="backend"):
        sparse_sort(keys, values, n_samples=1, generator=0, backend="fancy")
    with pytest.raises(ValueError, match="depth"):
        half_permutation(keys, 2)
    with pytest.raises(ValueError, match="certainty"):
        half_permutation(keys, 0, certainty=0.0)


def test_all_permutations_of_four_sort_exactly():
    values = torch.arange(4, dtype=torch.float64).view(1, 4, 1)
    for perm in itertools.permutations(range(4)):
        keys = torch.tensor([perm], dtype=torch.float64)
        shuffled = torch.tensor([perm], dtype=torch.float64).unsqueeze(-1)
        result = sparse_sort(keys * 10, shuffled, n_samples=6, generator=0)
        torch.testing.assert_close(result.values, values, atol=1e-12, rtol=0)


def test_a_linear_key_learns_the_order_through_the_soft_sort():
    # items are 3-vectors ordered by a hidden direction; only the sort's gradient trains w
    g = _gen(0)
    hidden = torch.tensor([1.0, -2.0, 0.5])
    w = torch.nn.Parameter(torch.randn(3, generator=g))
    optimizer = torch.optim.Adam([w], lr=0.05)
    cos_before = torch.nn.functional.cosine_similarity(w.detach(), hidden, dim=0)
    losses = []
    for _ in range(60):
        x = torch.randn(32, 4, 3, generator=g)
        v = x @ hidden
        out = sparse_sort(x @ w, v.unsqueeze(-1), n_samples=4, generator=g).values.squeeze(-1)
        loss = (out - v.sort(dim=1).values).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) < 0.2 * sum(losses[:10])
    cos_after = torch.nn.functional.cosine_similarity(w.detach(), hidden, dim=0)
    assert cos_before < 0.5 and cos_after > 0.8, (cos_before, cos_after)
