"""Reference building blocks: sampling, keys, duplicates, proportions, contraction."""

import itertools
import math

import pytest
import torch

from hyperkern import ops
from hyperkern import reference as ref
from tests.helpers import random_problem


# --- sampling ---------------------------------------------------------------------------------
def test_samples_in_bounds_also_with_means_on_the_bounds():
    dims = (5, 1, 7)
    mu = torch.tensor([[[4.0, 0.0, 6.0], [0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [2.5, 0.0, 6.0]]])
    mu = mu.double()
    points = ref.sample_tuples(mu, dims, n_local=50, n_global=50, region=(5, 1, 3), generator=1)
    assert points.shape == (1, 4, 2**3 + 100, 3)
    upper = torch.tensor(dims) - 1
    assert (points >= 0).all() and (points <= upper).all()
    # raw means saturated by the sigmoid land exactly on the upper bound and stay in bounds
    sat = ref.transform_means(torch.full((1, 2, 3), 50.0), dims)
    assert torch.equal(sat[0, 0], (torch.tensor(dims) - 1).float())
    pts = ref.sample_tuples(sat, dims, 10, 10, generator=0)
    assert (pts <= upper).all()


def test_corners_are_every_floor_ceil_combination():
    mu = torch.tensor([[[1.3, 2.6]]], dtype=torch.float64)
    corners = ref.sample_tuples(mu, (4, 4), 0, 0)[0, 0]
    expected = {(a, b) for a, b in itertools.product((1, 2), (2, 3))}
    assert {tuple(t.tolist()) for t in corners} == expected


def test_local_samples_stay_in_a_shifted_box_of_full_size():
    dims, region = (10, 10), (4, 3)
    mu = torch.tensor([[[0.2, 9.0], [5.0, 5.0]]], dtype=torch.float64)
    pts = ref.sample_tuples(mu, dims, n_local=400, n_global=0, region=region, generator=3)
    local = pts[0, :, 4:]
    # mean near 0 / 9: box shifted inside to [0, 4) x [7, 10)
    assert set(local[0, :, 0].tolist()) == {0, 1, 2, 3}
    assert set(local[0, :, 1].tolist()) == {7, 8, 9}
    # centred mean: box [3, 7) x [4, 7)
    assert set(local[1, :, 0].tolist()) == {3, 4, 5, 6}
    assert set(local[1, :, 1].tolist()) == {4, 5, 6}


def test_same_seed_same_samples_different_seed_different_samples():
    mu = torch.rand(2, 5, 3, dtype=torch.float64) * 9
    a = ref.sample_tuples(mu, (10, 10, 10), 4, 4, generator=7)
    b = ref.sample_tuples(mu, (10, 10, 10), 4, 4, generator=torch.tensor(7))
    c = ref.sample_tuples(mu, (10, 10, 10), 4, 4, generator=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    d = ref.sample_tuples(mu, (10, 10, 10), 4, 4, generator=g1)
    assert torch.equal(d, ref.sample_tuples(mu, (10, 10, 10), 4, 4, generator=g2))
    assert not torch.equal(d, ref.sample_tuples(mu, (10, 10, 10), 4, 4, generator=g1))


# --- keys and duplicates ----------------------------------------------------------------------
def test_cantor_keys_match_python_big_ints_and_are_injective():
    dims = (6, 5, 4)
    pts = torch.tensor(list(itertools.product(*(range(d) for d in dims))))
    keys = ref.cantor_keys(pts)

    def u(a, b):
        return (a + b) * (a + b + 1) // 2 + b

    expected = [u(a, u(b, c)) for a, b, c in pts.tolist()]
    assert keys.tolist() == expected
    assert len(set(expected)) == len(expected)


def test_cantor_keys_exact_beyond_float_precision():
    # The original code divided in float: codes above 2**24 collided. Ours are exact.
    pts = torch.tensor([[2**20, 2**20 + 1], [2**20 + 1, 2**20]])
    keys = ref.cantor_keys(pts)
    a, b = 2**20, 2**20 + 1
    assert keys[0].item() == (a + b) * (a + b + 1) // 2 + b
    assert keys[0].item() != keys[1].item()


def test_cantor_and_linear_keys_mask_the_same_tuples():
    points, *_ = random_problem(3, 9, (4, 3, 5), n_local=6, n_global=6, seed=2)
    for cs in (None, 1, 4):
        cantor = ref.duplicate_mask(points, (4, 3, 5), cs, key_kind="cantor")
        linear = ref.duplicate_mask(points, (4, 3, 5), cs, key_kind="linear")
        assert torch.equal(cantor, linear)
        assert cantor.any()


def test_auto_key_falls_back_to_linear_where_cantor_overflows():
    dims = (2**20, 2**20, 2**20)
    assert not ref.cantor_fits(dims) and ref.linear_fits(dims)
    pts = torch.tensor([[[[5, 6, 7], [5, 6, 7], [1, 2, 3]]]])
    mask = ref.duplicate_mask(pts, dims)
    assert mask.tolist() == [[[False, True, False]]]
    with pytest.raises(ValueError, match="Cantor"):
        ref.duplicate_mask(pts, dims, key_kind="cantor")
    with pytest.raises(ValueError, match="int64"):
        ref.tuple_keys(pts, (2**40, 2**40))


def test_duplicate_mask_keeps_first_occurrence_per_context():
    # two means, three samples each; tuple (1, 1) occurs in both means
    pts = torch.tensor([[[[1, 1], [0, 0], [1, 1]], [[1, 1], [2, 2], [0, 0]]]])
    whole = ref.duplicate_mask(pts, (3, 3))
    assert whole.tolist() == [[[False, False, True], [True, False, True]]]
    per_mean = ref.duplicate_mask(pts, (3, 3), context_size=1)
    assert per_mean.tolist() == [[[False, False, True], [False, False, False]]]


def test_duplicate_mask_matches_brute_force_on_random_tuples():
    gen = torch.Generator().manual_seed(0)
    pts = torch.randint(0, 3, (2, 7, 5, 2), generator=gen)
    for cs in (None, 2, 3, 7):
        mask = ref.duplicate_mask(pts, (3, 3), cs)
        n_ctx, size = ref.context_count(7, cs)
        for b in range(2):
            for c in range(n_ctx):
                seen = set()
                for m in range(c * size, min((c + 1) * size, 7)):
                    for s in range(5):
                        t = tuple(pts[b, m, s].tolist())
                        assert mask[b, m, s].item() == (t in seen)
                        seen.add(t)


# --- proportions ------------------------------------------------------------------------------
def test_proportions_normalise_each_mean_to_its_value():
    points, mu, sigma, values, dup = random_problem(2, 6, (7, 5), seed=4)
    vprime = ref.proportions(points, mu, sigma, values, dup)
    assert torch.allclose(vprime.sum((1, 2)), values.sum(1))
    assert (vprime[dup] == 0).all()


def test_all_samples_on_one_tuple_total_mass_equals_value():
    dims = (6, 6)
    mu = torch.full((1, 1, 2), 3.0, dtype=torch.float64)
    sigma = torch.ones(1, 1, 2, dtype=torch.float64)
    points = ref.sample_tuples(mu, dims, n_local=20, n_global=0, region=(1, 1), generator=0)
    dup = ref.duplicate_mask(points, dims)
    assert (~dup).sum() == 1  # corners and local samples all hit (3, 3)
    vprime = ref.proportions(points, mu, sigma, torch.tensor([[2.5]], dtype=torch.float64), dup)
    assert vprime.sum().item() == pytest.approx(2.5)
    assert vprime.max().item() == pytest.approx(2.5)


def test_every_point_gets_mass_from_every_mean_of_its_context():
    points = torch.tensor([[[[0, 0]], [[4, 4]]]])
    mu = torch.tensor([[[0.0, 0.0], [4.0, 4.0]]], dtype=torch.float64)
    sigma = torch.full((1, 2, 2), 8.0, dtype=torch.float64)
    dup = torch.zeros(1, 2, 1, dtype=torch.bool)
    values = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    vprime = ref.proportions(points, mu, sigma, values, dup)
    assert vprime[0, 1, 0] > 0  # the second mean's point receives mass from the first mean
    separate = ref.proportions(points, mu, sigma, values, dup, context_size=1)
    assert separate[0, 1, 0] == 0


def test_tiny_sigma_and_far_points_give_no_nan():
    points, mu, _, values, dup = random_problem(1, 4, (50, 50), seed=5)
    for scale in (1e-30, 1e-8, 1e8):
        sigma = torch.full_like(mu, scale)
        vprime = ref.proportions(points, mu, sigma, values, dup)
        assert torch.isfinite(vprime).all()
        assert torch.allclose(vprime.sum((1, 2)), values.sum(1))
    far = torch.full_like(mu, 1e-300)  # densities underflow even in log space
    assert torch.isfinite(ref.proportions(points, mu + 0.5, far, values, dup)).all()


@pytest.mark.parametrize("context_size", [None, 2, 3])
def test_chunked_equals_unchunked_values_and_gradients(context_size):
    points, mu, sigma, values, dup = random_problem(2, 7, (9, 8), seed=6, context_size=context_size)
    leaves = [t.clone().requires_grad_() for t in (mu, sigma, values)]
    weight = torch.randn(points.shape[:3], dtype=torch.float64)
    full = ref.proportions(points, *leaves, dup, context_size)
    grads_full = torch.autograd.grad((full * weight).sum(), leaves)
    for chunk in (1, 2, 3):
        out = ref.proportions(points, *leaves, dup, context_size, chunk_size=chunk)
        assert torch.allclose(out, full)
        grads = torch.autograd.grad((out * weight).sum(), leaves)
        for g, gf in zip(grads, grads_full, strict=True):
            assert torch.allclose(g, gf)


def test_gradcheck_proportions():
    points, mu, sigma, values, dup = random_problem(2, 3, (5, 4), seed=7)
    leaves = [t.clone().requires_grad_() for t in (mu, sigma, values)]
    assert torch.autograd.gradcheck(lambda m, s, v: ref.proportions(points, m, s, v, dup), leaves)
    assert torch.autograd.gradcheck(
        lambda m, s, v: ref.proportions(points, m, s, v, dup, 2, chunk_size=1), leaves
    )


# --- contraction ------------------------------------------------------------------------------
@pytest.mark.parametrize("columns", [None, 1, 3])
def test_contract_equals_dense_matmul(columns):
    gen = torch.Generator().manual_seed(8)
    b, n_in, n_out, P = 4, 7, 5, 23
    x_shape = (b, n_in) if columns is None else (b, n_in, columns)
    x = torch.randn(x_shape, dtype=torch.float64, generator=gen)
    for B in (1, b):
        rows = torch.randint(0, n_out, (B, P), generator=gen)
        cols = torch.randint(0, n_in, (B, P), generator=gen)
        vprime = torch.randn(B, P, dtype=torch.float64, generator=gen)
        W = ops.densify(rows, cols, vprime, n_out, n_in).expand(b, n_out, n_in)
        expected = torch.einsum("boi,bi...->bo...", W, x)
        assert torch.allclose(ref.contract(rows, cols, vprime, x, n_out), expected)


def test_contract_handles_empty_and_single():
    x = torch.randn(3, 4, dtype=torch.float64)
    empty = torch.zeros(1, 0, dtype=torch.long)
    y = ref.contract(empty, empty, torch.zeros(1, 0, dtype=torch.float64), x, 2)
    assert torch.equal(y, torch.zeros(3, 2, dtype=torch.float64))
    one = torch.tensor([[1]])
    y = ref.contract(one, one, torch.tensor([[2.0]], dtype=torch.float64), x, 2)
    assert torch.allclose(y[:, 1], 2 * x[:, 1]) and (y[:, 0] == 0).all()


def test_gradcheck_contract():
    gen = torch.Generator().manual_seed(9)
    rows = torch.randint(0, 3, (2, 11), generator=gen)
    cols = torch.randint(0, 5, (2, 11), generator=gen)
    vprime = torch.randn(2, 11, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, x: ref.contract(rows, cols, v, x, 3), (vprime, x))


def test_flatten_tuples_row_major():
    pts = torch.tensor([[2, 1, 3, 4]])  # out_shape (3, 2), in_shape (5, 6)
    rows, cols = ref.flatten_tuples(pts, (3, 2), (5, 6))
    assert rows.item() == 2 * 2 + 1 and cols.item() == 3 * 6 + 4
    assert math.prod((3, 2)) > rows.item()
