"""Tests for hyperkern.hypernets: plumbing, full/chunked/scaling/per-sample hypernetworks,
Ha static + HyperLSTM, hyperfan init and the gradient-flow check (CPU, float64 where exact)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hyperkern.reference.hyper_linear import hyper_linear, hyper_linear_materialized
from torch import nn

from hyperkern.hypernets import (
    ChunkedHypernetwork,
    FullHypernetwork,
    HyperLSTM,
    HyperLSTMCell,
    PerSampleMLPHypernetwork,
    ScalingHypernetwork,
    StaticHyperCNN,
    StaticHyperConvGenerator,
    check_gradient_flow,
    count_params,
    flatten_params,
    functional_forward,
    param_specs,
    per_sample_forward,
    per_sample_linear,
    unflatten_params,
)

torch.set_default_dtype(torch.float32)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mlp_target(sizes=(7, 5, 3)) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.Tanh()]
    return nn.Sequential(*layers[:-1]).double()


def assert_all_params_get_grad(model: nn.Module, loss_fn) -> None:
    report = check_gradient_flow(model, loss_fn)
    assert report.ok, str(report)


# ---------------------------------------------------------------- target plumbing


def test_param_specs_count_and_roundtrip():
    target = nn.Sequential(nn.Conv2d(3, 5, 3), nn.Flatten(), nn.Linear(5 * 4 * 4, 7)).double()
    specs = param_specs(target)
    assert [s.name for s in specs] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert (
        count_params(target)
        == 5 * 3 * 9 + 5 + 80 * 7 + 7
        == sum(p.numel() for p in target.parameters())
    )
    own = dict(target.named_parameters())
    flat = flatten_params(own, specs)
    back = unflatten_params(flat, specs)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, generator=gen())
    torch.testing.assert_close(functional_forward(target, back, x), target(x), rtol=0, atol=0)


def test_functional_forward_keeps_graph_and_rejects_missing():
    target = mlp_target()
    specs = param_specs(target)
    flat = torch.randn(count_params(specs), dtype=torch.float64, generator=gen())
    flat.requires_grad_(True)
    x = torch.randn(4, 7, dtype=torch.float64, generator=gen(1))
    out = functional_forward(target, unflatten_params(flat, specs), x)
    (grad,) = torch.autograd.grad(out.sum(), flat)
    assert grad.ne(0).all()
    params = unflatten_params(flat, specs)
    params.pop("2.bias")
    with pytest.raises(ValueError, match="2.bias"):
        functional_forward(target, params, x)
    with pytest.raises(ValueError, match="flat"):
        unflatten_params(flat[:-1], specs)


def test_per_sample_forward_vmap_equals_loop():
    target = mlp_target()
    specs = param_specs(target)
    flats = torch.randn(5, count_params(specs), dtype=torch.float64, generator=gen())
    x = torch.randn(5, 7, dtype=torch.float64, generator=gen(1))
    out = per_sample_forward(target, unflatten_params(flats, specs), x)
    loop = torch.stack(
        [functional_forward(target, unflatten_params(flats[b], specs), x[b]) for b in range(5)]
    )
    torch.testing.assert_close(out, loop)


# ---------------------------------------------------------------- full hypernetwork


def test_full_exact_size_matches_hand_built_and_grads():
    target = mlp_target((7, 5, 3))
    hyper = FullHypernetwork(target, embedding_dim=4, hidden_sizes=(6,), seed=1).double()
    assert hyper.head.out_features == count_params(target) == 7 * 5 + 5 + 5 * 3 + 3
    assert not any(p is q for p in hyper.parameters() for q in target.parameters())
    x = torch.randn(4, 7, dtype=torch.float64, generator=gen())
    flat = hyper.head(hyper.body(hyper.embeddings[0]))
    w1, b1 = flat[:35].view(5, 7), flat[35:40]
    w2, b2 = flat[40:55].view(3, 5), flat[55:58]
    expected = F.linear(torch.tanh(F.linear(x, w1, b1)), w2, b2)
    torch.testing.assert_close(hyper(x), expected)
    assert_all_params_get_grad(hyper, lambda m: m(x).pow(2).mean())


def test_full_batched_tasks_equal_loop_and_seeded():
    target = mlp_target()
    hyper = FullHypernetwork(target, embedding_dim=3, num_embeddings=4, seed=2).double()
    tasks = torch.tensor([3, 0, 2, 2, 1])
    x = torch.randn(5, 7, dtype=torch.float64, generator=gen())
    loop = torch.stack([hyper(x[b : b + 1], task=int(tasks[b]))[0] for b in range(5)])
    torch.testing.assert_close(hyper(x, task=tasks), loop)
    again = FullHypernetwork(target, embedding_dim=3, num_embeddings=4, seed=2).double()
    other = FullHypernetwork(target, embedding_dim=3, num_embeddings=4, seed=3).double()
    torch.testing.assert_close(again.generate_flat(), hyper.generate_flat(), rtol=0, atol=0)
    assert not torch.allclose(other.generate_flat(), hyper.generate_flat())


@pytest.mark.parametrize("mode,fan_index", [("hyperfan_in", 1), ("hyperfan_out", 0)])
def test_full_hyperfan_gives_target_variance(mode, fan_index):
    target = nn.Linear(200, 100)
    hyper = FullHypernetwork(target, embedding_dim=16, hidden_sizes=(32,), init=mode, seed=0)
    weight = hyper.generate()["weight"].detach()
    expected = 0.5 / target.weight.shape[fan_index]  # bias generated too: half the variance
    assert weight.var().item() == pytest.approx(expected, rel=0.1)
    plain = FullHypernetwork(target, embedding_dim=16, hidden_sizes=(32,), init="default")
    assert abs(plain.generate()["weight"].var().item() - expected) > 0.2 * expected


# ---------------------------------------------------------------- chunked hypernetwork


@pytest.mark.parametrize("chunk_size", [1, 7, 16, 58, 100])
def test_chunked_exact_chunk_count_and_hand_built(chunk_size):
    target = mlp_target((7, 5, 3))
    p = count_params(target)
    hyper = ChunkedHypernetwork(
        target, chunk_size, embedding_dim=3, chunk_embedding_dim=2, hidden_sizes=(5,), seed=0
    ).double()
    assert hyper.num_chunks == math.ceil(p / chunk_size)
    z = hyper.embeddings[0]
    chunks = [
        hyper.head(hyper.body(torch.cat([z, hyper.chunk_embeddings[k]])))
        for k in range(hyper.num_chunks)
    ]
    expected = torch.cat(chunks)[:p]
    torch.testing.assert_close(hyper.generate_flat(), expected)
    x = torch.randn(3, 7, dtype=torch.float64, generator=gen())
    assert_all_params_get_grad(hyper, lambda m: m(x).pow(2).mean())


def test_chunked_batched_z_equals_loop():
    target = mlp_target()
    hyper = ChunkedHypernetwork(target, 9, embedding_dim=3, seed=0).double()
    z = torch.randn(4, 3, dtype=torch.float64, generator=gen())
    x = torch.randn(4, 7, dtype=torch.float64, generator=gen(1))
    loop = torch.stack([hyper(x[b], z=z[b]) for b in range(4)])
    torch.testing.assert_close(hyper(x, z=z), loop)


# ---------------------------------------------------------------- scaling hypernetwork


@pytest.mark.parametrize("mode", ["row", "column", "both"])
def test_scaling_matches_hand_built(mode):
    target = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(3 * 4 * 4, 5)).double()
    hyper = ScalingHypernetwork(target, embedding_dim=4, mode=mode, seed=0).double()
    scales = hyper.scales()
    params = hyper.generate()
    start, expected = 0, {}
    for name, base in zip(["0.weight", "2.weight"], [hyper.base[0], hyper.base[2]], strict=True):
        rows, cols = base.shape[0], base.shape[1]
        s_row = scales[start : start + rows] if mode != "column" else torch.ones(rows)
        start += rows if mode != "column" else 0
        s_col = scales[start : start + cols] if mode != "row" else torch.ones(cols)
        start += cols if mode != "row" else 0
        view = (-1, 1) + (1,) * (base.dim() - 2)
        expected[name] = base * s_row.view(view) * s_col.view((1, -1) + view[2:])
    assert start == scales.numel()
    for name, value in expected.items():
        torch.testing.assert_close(params[name], value)
    torch.testing.assert_close(params["0.bias"], hyper.base[1])
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64, generator=gen())
    assert_all_params_get_grad(hyper, lambda m: m(x).pow(2).mean())
    z = torch.randn(2, 4, dtype=torch.float64, generator=gen(1))
    loop = torch.stack([hyper(x[b : b + 1], z=z[b])[0] for b in range(2)])
    torch.testing.assert_close(hyper(x, z=z), loop)


def test_scaling_starts_at_target_when_scales_are_one():
    target = mlp_target()
    hyper = ScalingHypernetwork(target, mode="both", scale_init_std=0.0).double()
    x = torch.randn(3, 7, dtype=torch.float64, generator=gen())
    torch.testing.assert_close(hyper(x), target(x))


# ---------------------------------------------------------------- per-sample hypernetwork


@pytest.mark.parametrize("batch,in_f,out_f", [(0, 3, 2), (1, 1, 1), (5, 7, 3), (13, 4, 11)])
@pytest.mark.parametrize("path", ["loop", "grouped_conv", "bmm", "vmap"])
def test_per_sample_linear_paths_equal_loop(batch, in_f, out_f, path):
    g = gen(batch)
    x = torch.randn(batch, in_f, dtype=torch.float64, generator=g)
    w = torch.randn(batch, out_f, in_f, dtype=torch.float64, generator=g)
    bias = torch.randn(batch, out_f, dtype=torch.float64, generator=g)
    expected = torch.einsum("boi,bi->bo", w, x) + bias
    torch.testing.assert_close(per_sample_linear(x, w, bias, path), expected)


def test_per_sample_linear_rejects_bad_input():
    x, w = torch.randn(2, 3), torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match="backend"):
        per_sample_linear(x, w, backend="nope")
    with pytest.raises(ValueError, match="weight"):
        per_sample_linear(x, torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match="bias"):
        per_sample_linear(x, w, torch.randn(2, 3))


@pytest.mark.parametrize("batch", [0, 1, 6])
def test_per_sample_mlp_paths_agree_with_grads(batch):
    hyper = PerSampleMLPHypernetwork((5, 7, 3), embedding_dim=4, seed=0).double()
    g = gen(batch)
    x = torch.randn(batch, 5, dtype=torch.float64, generator=g)
    e = torch.randn(batch, 4, dtype=torch.float64, generator=g, requires_grad=True)
    outputs, grads = {}, {}
    for path in ["loop", "grouped_conv", "bmm", "vmap", "outer"]:
        out = hyper(x, e, backend=path)
        outputs[path] = out
        loss = (out * torch.arange(3, dtype=torch.float64)).pow(2).sum()
        grads[path] = torch.autograd.grad(
            loss, [e, *hyper.parameters()], allow_unused=True, materialize_grads=True
        )
    for path in outputs:
        torch.testing.assert_close(outputs[path], outputs["bmm"])
        for a, b in zip(grads[path], grads["bmm"], strict=True):
            torch.testing.assert_close(a, b)


def test_per_sample_mlp_generate_is_hand_built_and_grads_flow():
    hyper = PerSampleMLPHypernetwork((4, 6, 2), embedding_dim=3, seed=1).double()
    e = torch.randn(5, 3, dtype=torch.float64, generator=gen())
    x = torch.randn(5, 4, dtype=torch.float64, generator=gen(1))
    (w1, b1), (w2, b2) = hyper.generate(e)
    torch.testing.assert_close(
        w1, (e @ hyper.weight_gen[0].T + hyper.weight_offset[0]).view(5, 6, 4)
    )
    torch.testing.assert_close(b2, e @ hyper.bias_gen[1].T + hyper.bias_offset[1])
    hand = torch.stack([w2[b] @ torch.relu(w1[b] @ x[b] + b1[b]) + b2[b] for b in range(5)])
    torch.testing.assert_close(hyper(x, e, backend="loop"), hand)
    assert_all_params_get_grad(hyper, lambda m: m(x, e, backend="outer").pow(2).mean())


def test_per_sample_mlp_hyperfan_in_variance():
    hyper = PerSampleMLPHypernetwork((300, 50), embedding_dim=32, seed=0)
    e = torch.randn(64, 32, generator=gen())
    ((weight, _),) = hyper.generate(e)
    assert weight.var().item() == pytest.approx(0.5 / 300, rel=0.1)


def test_per_sample_mlp_rejects_bad_input():
    hyper = PerSampleMLPHypernetwork((4, 2), embedding_dim=3)
    with pytest.raises(ValueError, match="e must be"):
        hyper(torch.randn(2, 4), torch.randn(2, 5))
    with pytest.raises(ValueError, match="x must be"):
        hyper(torch.randn(3, 4), torch.randn(2, 3))
    with pytest.raises(ValueError, match="backend"):
        hyper(torch.randn(2, 4), torch.randn(2, 3), backend="triton?")


def test_reference_hyper_linear_gradcheck_and_materialized():
    g = gen(3)
    args = [
        torch.randn(3, 4, dtype=torch.float64, generator=g, requires_grad=True),
        torch.randn(3, 2, dtype=torch.float64, generator=g, requires_grad=True),
        torch.randn(5 * 4, 2, dtype=torch.float64, generator=g, requires_grad=True),
        torch.randn(5 * 4, dtype=torch.float64, generator=g, requires_grad=True),
    ]
    assert torch.autograd.gradcheck(hyper_linear, args)
    torch.testing.assert_close(hyper_linear(*args), hyper_linear_materialized(*args))


# ---------------------------------------------------------------- Ha et al. static hypernetwork


@pytest.mark.parametrize("n_in,n_out,f,n_z,d", [(3, 5, 3, 4, 4), (1, 2, 1, 2, 3), (7, 2, 5, 3, 2)])
def test_static_generator_matches_paper_formula(n_in, n_out, f, n_z, d):
    g = StaticHyperConvGenerator(n_in, n_out, f, n_z, hidden_dim=d, seed=0).double()
    with torch.no_grad():  # non-zero biases so B_i and B_out are exercised
        g.b_in.normal_(generator=gen(1))
        g.b_out.normal_(generator=gen(2))
    z = torch.randn(n_z, dtype=torch.float64, generator=gen())
    slices = []
    for i in range(n_in):
        a_i = g.w_in[i] @ z + g.b_in[i]
        slices.append((g.w_out @ a_i + g.b_out).view(f, n_out * f))
    k = torch.cat(slices, dim=0)  # (N_in f, N_out f)
    weight = g(z)
    assert weight.shape == (n_out, n_in, f, f)
    for o in range(n_out):
        for i in range(n_in):
            torch.testing.assert_close(weight[o, i], k[i * f : (i + 1) * f, o * f : (o + 1) * f])
    zs = torch.randn(3, n_z, dtype=torch.float64, generator=gen(4))
    torch.testing.assert_close(g(zs), torch.stack([g(zs[j]) for j in range(3)]))


def test_static_hyper_cnn_grads_and_kernel_variance():
    model = StaticHyperCNN(1, channels=16, num_layers=3, num_classes=4, z_dim=8, seed=0).double()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=gen())
    assert model(x).shape == (2, 4)
    assert_all_params_get_grad(model, lambda m: m(x).pow(2).mean())
    kernels = model.kernels().detach()
    assert kernels.var().item() == pytest.approx(2.0 / (16 * 9), rel=0.25)


# ---------------------------------------------------------------- HyperLSTM


def test_hyperlstm_matches_materialized_weights():
    cell = HyperLSTMCell(3, 5, hyper_hidden_size=4, hyper_embedding_size=2, seed=0).double()
    with torch.no_grad():  # move away from the d = 1 start so the scaling matters
        cell.w_z.normal_(generator=gen(7))
    xs = torch.randn(4, 6, 3, dtype=torch.float64, generator=gen())
    state = cell.initial_state(4, xs)
    manual = state
    for t in range(6):
        w_h, w_x, bias = cell.generated_weights(xs[:, t], manual)
        d_h, _, _, hyper_state = cell.hyper_step(xs[:, t], manual)
        assert not torch.allclose(d_h, torch.ones_like(d_h))
        gates = (
            torch.bmm(w_h, manual[0].unsqueeze(-1)).squeeze(-1)
            + torch.bmm(w_x, xs[:, t].unsqueeze(-1)).squeeze(-1)
            + bias
        )
        i, f, o, u = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * manual[1] + torch.sigmoid(i) * torch.tanh(u)
        h = torch.sigmoid(o) * torch.tanh(c)
        manual = (h, c, *hyper_state)
        h_fast, state = cell(xs[:, t], state)
        torch.testing.assert_close(h_fast, h)
        torch.testing.assert_close(state[1], c)


def test_hyperlstm_starts_near_plain_lstm_and_grads_flow():
    model = HyperLSTM(3, 5, hyper_hidden_size=4, hyper_embedding_size=2, seed=0).double()
    x = torch.randn(2, 7, 3, dtype=torch.float64, generator=gen())
    d_h, d_x, _, _ = model.cell.hyper_step(x[:, 0], model.cell.initial_state(2, x))
    assert (d_h - 1).abs().max() < 0.2 and (d_x - 1).abs().max() < 0.2
    out, _ = model(x)
    assert out.shape == (2, 7, 5)
    assert_all_params_get_grad(model, lambda m: m(x)[0][:, -1].pow(2).sum())
    with pytest.raises(ValueError, match="x must be"):
        model(torch.randn(2, 3))


# ---------------------------------------------------------------- gradient-flow check


class BrokenHypernet(nn.Module):
    """The tutorial's wrong assignment: generated weights wrapped in a fresh nn.Parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.z = nn.Parameter(torch.randn(3))
        self.head = nn.Linear(3, 4 * 2)
        self.unused = nn.Parameter(torch.randn(2))
        self.target = nn.Linear(2, 4)

    def step(self, x):
        generated = self.head(self.z).view(4, 2)
        del self.target.weight
        self.target.weight = nn.Parameter(generated)  # graph cut here
        return self.target(x).pow(2).mean(), {"target.weight": self.target.weight}


def test_gradient_flow_check_finds_breaks_and_passes_good_model():
    broken = BrokenHypernet()
    x = torch.randn(5, 2, generator=gen())
    report = check_gradient_flow(broken, lambda m: m.step(x))
    assert not report.ok
    assert {"z", "head.weight", "head.bias", "unused"} <= set(report.no_grad)
    assert report.detached == ["target.weight"]
    assert "detached" in str(report)

    hyper = FullHypernetwork(mlp_target(), embedding_dim=3, seed=0).double()
    xd = torch.randn(4, 7, dtype=torch.float64, generator=gen())
    optim = torch.optim.SGD(hyper.parameters(), lr=0.1)
    report = check_gradient_flow(hyper, lambda m: (m(xd).sum(), m.generate()), optim)
    assert report.ok, str(report)
    with pytest.raises(ValueError, match="scalar"):
        check_gradient_flow(hyper, lambda m: m(xd))


def test_constructors_reject_bad_arguments():
    with pytest.raises(TypeError, match="target must be an nn.Module"):
        FullHypernetwork("not a module")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no parameters"):
        FullHypernetwork(nn.ReLU())
    with pytest.raises(ValueError, match="chunk_size"):
        ChunkedHypernetwork(mlp_target(), chunk_size=0)
    with pytest.raises(ValueError, match="mode"):
        ScalingHypernetwork(mlp_target(), mode="diagonal")
    with pytest.raises(ValueError, match="z must have shape"):
        FullHypernetwork(mlp_target(), embedding_dim=3).double().generate(z=torch.zeros(4))
    with pytest.raises(ValueError, match="z must be"):
        StaticHyperConvGenerator(2, 2, 3, 4)(torch.zeros(5))
    with pytest.raises(ValueError, match="layer_sizes"):
        PerSampleMLPHypernetwork((4,), embedding_dim=2)
