"""Ha, Dai & Le (2017) static hypernetwork for CNN kernels: layer embeddings ``z^j`` and a
two-layer linear generator shared by all layers.

For input channel ``i`` and layer ``j``::

    a_i^j = W_i z^j + B_i                    W_i (d, N_z), B_i (d,)
    K_i^j = <W_out, a_i^j> + B_out           W_out (f·N_out·f, d), B_out (f·N_out·f,)
    K^j   = [K_1^j; ...; K_{N_in}^j]          (N_in·f, N_out·f), K_i^j reshaped to (f, N_out·f)

and the conv weight is ``weight[o, i, r, s] = K^j[i·f + r, o·f + s]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .init import init_linear_, normal_, seeded_generator


class StaticHyperConvGenerator(nn.Module):
    """``g(z^j)``: layer embedding ``(N_z,)`` -> conv kernel ``(N_out, N_in, f, f)``.

    Args:
        in_channels: ``N_in``.
        out_channels: ``N_out``.
        kernel_size: ``f``.
        z_dim: ``N_z``.
        hidden_dim: ``d`` (the paper fixes ``d = N_z``; default).
        gain: kernels start with ``Var = gain² / (N_in f²)`` for ``z ~ N(0, 1)`` (hyperfan-in).
        seed: seeds every initial value.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        z_dim: int,
        hidden_dim: int | None = None,
        gain: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        hidden_dim = z_dim if hidden_dim is None else hidden_dim
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.z_dim, self.hidden_dim = kernel_size, z_dim, hidden_dim
        generator = seeded_generator(seed)
        slice_size = kernel_size * out_channels * kernel_size
        self.w_in = nn.Parameter(torch.empty(in_channels, hidden_dim, z_dim))  # W_i
        self.b_in = nn.Parameter(torch.zeros(in_channels, hidden_dim))  # B_i
        self.w_out = nn.Parameter(torch.empty(slice_size, hidden_dim))  # W_out
        self.b_out = nn.Parameter(torch.zeros(slice_size))  # B_out
        # E[a²] = 1 for z ~ N(0, 1); then Var(K) = d Var(W_out) = gain² / fan_in.
        normal_(self.w_in, z_dim**-0.5, generator)
        fan_in = in_channels * kernel_size**2
        normal_(self.w_out, gain / (hidden_dim * fan_in) ** 0.5, generator)

    def slices(self, z: torch.Tensor) -> torch.Tensor:
        """``K_i^j`` for all ``i``: ``z (L, N_z)`` -> ``(L, N_in, f, N_out·f)``."""
        a = torch.einsum("idz,lz->lid", self.w_in, z) + self.b_in
        k = a @ self.w_out.T + self.b_out
        f = self.kernel_size
        return k.reshape(z.shape[0], self.in_channels, f, self.out_channels * f)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z (N_z,)`` -> ``(N_out, N_in, f, f)``; ``z (L, N_z)`` -> ``(L, N_out, N_in, f, f)``."""
        if z.dim() not in (1, 2) or z.shape[-1] != self.z_dim:
            raise ValueError(
                f"z must be (N_z,) or (L, N_z) with N_z={self.z_dim}, got {tuple(z.shape)}"
            )
        single = z.dim() == 1
        z = z.unsqueeze(0) if single else z
        f, n_in, n_out = self.kernel_size, self.in_channels, self.out_channels
        k = self.slices(z).reshape(z.shape[0], n_in, f, n_out, f)
        weight = k.permute(0, 3, 1, 2, 4)  # (L, N_out, N_in, f, f)
        return weight[0] if single else weight


class StaticHyperCNN(nn.Module):
    """A stack of ``num_layers`` same-width conv layers whose kernels come from one shared
    :class:`StaticHyperConvGenerator` and per-layer learned embeddings ``z^j``.

    Input ``(b, in_channels, H, W)`` -> stem conv (ordinary) -> hyper conv layers (ReLU,
    'same' padding) -> global average pool -> linear -> ``(b, num_classes)``.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_layers: int,
        num_classes: int,
        kernel_size: int = 3,
        z_dim: int = 8,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        generator = seeded_generator(seed)
        self.stem = nn.Conv2d(in_channels, channels, kernel_size, padding=kernel_size // 2)
        self.layer_embeddings = nn.Parameter(torch.randn(num_layers, z_dim, generator=generator))
        self.generator = StaticHyperConvGenerator(
            channels, channels, kernel_size, z_dim, gain=2**0.5, seed=seed + 1
        )
        self.classifier = nn.Linear(channels, num_classes)
        self.padding = kernel_size // 2
        stem_std = (in_channels * kernel_size**2) ** -0.5
        normal_(self.stem.weight, stem_std, generator)
        nn.init.zeros_(self.stem.bias)
        init_linear_(self.classifier, generator)

    def kernels(self) -> torch.Tensor:
        """All generated kernels ``(L, C, C, f, f)``."""
        return self.generator(self.layer_embeddings)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        for weight in self.kernels():
            h = torch.relu(F.conv2d(h, weight, padding=self.padding))
        return self.classifier(h.mean(dim=(2, 3)))
