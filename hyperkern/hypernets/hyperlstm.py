"""HyperLSTM (Ha, Dai & Le 2017, dynamic hypernetwork): a small LSTM reads ``[x_t, h_{t-1}]``
and generates, at every step and for every sample, row scalings of the main LSTM's weights.

For each gate ``g`` in (i, f, o, u) with hyper hidden state ``ĥ_t``::

    z_h = W_hz ĥ_t + b_hz,  z_x = W_xz ĥ_t + b_xz,  z_b = W_bz ĥ_t
    d_h = W_hd z_h,         d_x = W_xd z_x,         b(z_b) = W_bd z_b + b_0
    gate = d_h ⊙ (W_h h_{t-1}) + d_x ⊙ (W_x x_t) + b(z_b)

so ``diag(d_h) W_h`` is the generated recurrent weight (never built on the fast path).
"""

from __future__ import annotations

import torch
from torch import nn

from .init import normal_, seeded_generator


class HyperLSTMCell(nn.Module):
    """One step of the HyperLSTM.

    Args:
        input_size: ``I``.
        hidden_size: ``H`` (main LSTM).
        hyper_hidden_size: ``H_hat`` (hyper LSTM).
        hyper_embedding_size: ``N_z``.
        seed: seeds every initial value.

    State: ``(h, c, h_hat, c_hat)`` with shapes ``(b, H), (b, H), (b, H_hat), (b, H_hat)``.
    At initialisation ``d_h ≈ d_x ≈ 1`` and the cell behaves like a plain LSTM.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        hyper_hidden_size: int = 16,
        hyper_embedding_size: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__()
        generator = seeded_generator(seed)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.hyper_hidden_size, self.hyper_embedding_size = hyper_hidden_size, hyper_embedding_size
        gates, n_z = 4 * hidden_size, hyper_embedding_size
        self.hyper_cell = nn.LSTMCell(input_size + hidden_size, hyper_hidden_size)
        for param in self.hyper_cell.parameters():
            normal_(param, hyper_hidden_size**-0.5, generator)
        self.w_x = nn.Parameter(torch.empty(gates, input_size))
        self.w_h = nn.Parameter(torch.empty(gates, hidden_size))
        normal_(self.w_x, input_size**-0.5, generator)
        normal_(self.w_h, hidden_size**-0.5, generator)
        # z projections: (3 kinds: h, x, b) x 4 gates x N_z.
        self.w_z = nn.Parameter(torch.empty(3, 4 * n_z, hyper_hidden_size))
        normal_(self.w_z, 0.1 * hyper_hidden_size**-0.5, generator)
        self.b_z = nn.Parameter(torch.cat([torch.ones(2, 4 * n_z), torch.zeros(1, 4 * n_z)]))
        # d projections: per kind and gate, (H, N_z); d_h = d_x = 1 when z = 1.
        self.w_d = nn.Parameter(torch.full((3, 4, hidden_size, n_z), 1.0 / n_z))
        with torch.no_grad():
            normal_(self.w_d[2], 0.01, generator)
        self.b_0 = nn.Parameter(torch.zeros(gates))

    def initial_state(self, batch: int, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Zero state ``(h, c, h_hat, c_hat)`` on the device/dtype of ``like``."""
        main = like.new_zeros(batch, self.hidden_size)
        hyper = like.new_zeros(batch, self.hyper_hidden_size)
        return main, main.clone(), hyper, hyper.clone()

    def hyper_step(
        self, x: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Run the hyper LSTM and generate ``(d_h (b, 4H), d_x (b, 4H), bias (b, 4H),
        (h_hat, c_hat))``."""
        h, _, h_hat, c_hat = state
        h_hat, c_hat = self.hyper_cell(torch.cat([x, h], dim=1), (h_hat, c_hat))
        batch, n_z = x.shape[0], self.hyper_embedding_size
        z = torch.einsum("kzh,bh->bkz", self.w_z, h_hat) + self.b_z  # (b, 3, 4 N_z)
        z = z.reshape(batch, 3, 4, n_z)
        d = torch.einsum("kghz,bkgz->bkgh", self.w_d, z).reshape(batch, 3, 4 * self.hidden_size)
        return d[:, 0], d[:, 1], d[:, 2] + self.b_0, (h_hat, c_hat)

    def generated_weights(
        self, x: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The per-sample weights this step uses, materialised (for checks and inspection):
        ``diag(d_h) W_h (b, 4H, H)``, ``diag(d_x) W_x (b, 4H, I)``, ``bias (b, 4H)``."""
        d_h, d_x, bias, _ = self.hyper_step(x, state)
        return d_h[:, :, None] * self.w_h, d_x[:, :, None] * self.w_x, bias

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, ...] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """``x (b, I)`` -> ``(h (b, H), new state)``."""
        if x.dim() != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"x must be (b, {self.input_size}), got {tuple(x.shape)}")
        state = self.initial_state(x.shape[0], x) if state is None else state
        h, c = state[0], state[1]
        d_h, d_x, bias, (h_hat, c_hat) = self.hyper_step(x, state)
        gates = d_h * (h @ self.w_h.T) + d_x * (x @ self.w_x.T) + bias
        i, f, o, u = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(u)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c, h_hat, c_hat)


class HyperLSTM(nn.Module):
    """HyperLSTM over sequences: ``x (b, t, I)`` -> ``(outputs (b, t, H), final state)``.

    Arguments as in :class:`HyperLSTMCell`.
    """

    def __init__(self, input_size: int, hidden_size: int, *args: int, **kwargs: int) -> None:
        super().__init__()
        self.cell = HyperLSTMCell(input_size, hidden_size, *args, **kwargs)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, ...] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        if x.dim() != 3:
            raise ValueError(f"x must be (b, t, {self.cell.input_size}), got {tuple(x.shape)}")
        outputs = []
        for step in range(x.shape[1]):
            h, state = self.cell(x[:, step], state)
            outputs.append(h)
        if not outputs:
            raise ValueError("x must have at least one time step")
        return torch.stack(outputs, dim=1), state
