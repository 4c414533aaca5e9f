"""Learned sparse self-attention: the sparse hyperlayer as an attention matrix (docs/algorithm.md
§11), after the original code's ``ASHSelfAttention``.

For every head and query position ``i`` a small source network reads ``[x_i, i / t]`` and emits
``k`` continuous key positions ``mu`` and widths. The query position is the template row of each
index tuple (fixed); only the key column is learned, so sampling, duplicate masking and the
proportions act on that one column, in the context of the query's own ``k`` means. Every sampled
key ``j`` of row ``i`` gets the score ``v'_ij <q_i, k_j> / sqrt(d)`` (``v'`` from the
proportions, so a key that no mean points at scores 0 before the softmax); the row's scores are
normalised by a softmax over its own sampled entries (duplicates and, with ``causal=True``,
keys after ``i`` are left out), and the output is ``sum_j a_ij v_j``.

Memory is ``O(t k S)`` per head (``S`` samples per mean), never ``(t, t)``. Scores and outputs
run on the library's row-grouped ops (``hyperkern::contract_rows_dot`` and
``hyperkern::contract_rows``: a query's sampled keys are one row, no sort), so the Triton
kernels take them on CUDA and ``torch.compile(fullgraph=True)`` traces the module.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as recompute_in_backward

from hyperkern import library, reference
from hyperkern._shared import resolve_key_kind
from hyperkern.backend import check_backend, resolve
from hyperkern.modules import _draw_seed, _GeneratorSource
from hyperkern.options import MAX_SAMPLES
from hyperkern.seeds import check_generator, seed_tensor

EVAL_MODES = ("corners", "round", "sample")


class SparseSelfAttention(nn.Module):
    """Multi-head self-attention over ``k`` learned key positions per query and head.

    Args:
        emb: embedding size; ``x`` is ``(b, t, emb)``, and so is the output.
        heads: attention heads; ``emb`` must be a multiple of it.
        k: learned key positions (means) per query and head.
        n_local, n_global: samples per mean near it (within ``region``) and anywhere, besides
            its two neighbouring integers.
        region: width of the local sampling window, in positions.
        causal: query ``i`` attends to keys ``<= i`` only (means live in ``[0, i]``).
        hidden: width of the source network (default ``4 * emb``).
        sigma_scale, min_sigma: widths as in :func:`hyperkern.reference.transform_sigmas`, in
            units of the sequence length.
        backend: ``"auto"`` (Triton for CUDA tensors), ``"torch"`` or ``"triton"``.
        generator: draws the samples of each training step (seeds as in :mod:`hyperkern.seeds`);
            ``None`` uses torch's global RNG.
        eval_mode: the keys of a query in eval mode, the same on every call:
            ``"corners"`` (default), each mean's two neighbouring integers weighted by the
            proportions, as in training (the training samples less the local and global ones);
            ``"round"``, each mean rounded, weight 1 (the paper's test-time rule, as
            :class:`~hyperkern.SparseLayer`'s ``eval_mode="round"``); ``"sample"``, one fixed
            draw of the training samples (seed 0).
        checkpoint: keep only ``x`` for the backward and recompute the rest of the layer
            (source network, projections, sampling, scores, softmax) there
            (``torch.utils.checkpoint``; one seed per step, so the recompute draws the same
            samples), for one more forward of the layer. In bench/LM.md's model (k = 4,
            t = 2048) the training step's peak memory fell from 140 to 84 MiB.

    Shapes: ``x (b, t, emb)`` -> ``(b, t, emb)``.
    """

    def __init__(
        self,
        emb: int,
        heads: int = 8,
        k: int = 8,
        n_local: int = 2,
        n_global: int = 2,
        region: int = 8,
        causal: bool = False,
        hidden: int | None = None,
        sigma_scale: float = 0.05,
        min_sigma: float = 0.0,
        backend: str = "auto",
        generator: torch.Generator | None = None,
        checkpoint: bool = False,
        eval_mode: str = "corners",
    ) -> None:
        super().__init__()
        for name, value in (("emb", emb), ("heads", heads), ("k", k), ("region", region)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if emb % heads:
            raise ValueError(f"emb ({emb}) must be a multiple of heads ({heads})")
        if not 0 <= n_local <= MAX_SAMPLES or not 0 <= n_global <= MAX_SAMPLES:
            raise ValueError(f"n_local and n_global must lie in [0, {MAX_SAMPLES}]")
        if eval_mode not in EVAL_MODES:
            raise ValueError(f"eval_mode must be one of {EVAL_MODES}, got {eval_mode!r}")
        check_backend(backend)
        check_generator(generator)
        self.emb, self.heads, self.k, self.causal = emb, heads, k, causal
        self.n_local, self.n_global, self.region = n_local, n_global, region
        self.sigma_scale, self.min_sigma, self.backend = sigma_scale, min_sigma, backend
        self.checkpoint, self.eval_mode = checkpoint, eval_mode
        self.seed_source = None if generator is None else _GeneratorSource(generator)
        self.to_qkv = nn.Linear(emb, 3 * emb, bias=False)
        self.unify = nn.Linear(emb, emb)
        hidden = hidden or 4 * emb
        self.to_params = nn.Sequential(
            nn.Linear(emb + 1, hidden), nn.ReLU(), nn.Linear(hidden, heads * k * 2)
        )
        self._init_params_head()

    def _init_params_head(self) -> None:
        """Start with the means of each head spread over recent keys (a causal row's means at
        fractions of the history, a bidirectional row's around the query) and wide widths."""
        head = self.to_params[-1]
        nn.init.normal_(head.weight, std=1e-3)
        with torch.no_grad():
            bias = head.bias.view(self.heads, self.k, 2)
            if self.causal:  # mu = sigmoid(raw) * i: logits of fractions 1/(k+1) .. k/(k+1)
                spread = torch.arange(1, self.k + 1, dtype=bias.dtype) / (self.k + 1)
                bias[..., 0] = torch.logit(spread)
            else:  # mu = i + t tanh(raw): offsets in [-1/8, 1/8] of the sequence
                bias[..., 0] = torch.linspace(-0.125, 0.125, self.k).atanh()
            bias[..., 1] = 0.0

    def key_positions(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The source network: ``mu``, ``sigma`` ``(b * heads, t * k, 1)`` (float32 or wider)
        of every (query, mean), key positions as continuous indices in ``[0, t - 1]``."""
        b, t, _ = x.shape
        position = torch.arange(t, device=x.device, dtype=x.dtype)
        inputs = torch.cat([x, (position / t).expand(b, t)[..., None]], dim=-1)
        raw = self.to_params(inputs).view(b, t, self.heads, self.k, 2)
        raw = raw.transpose(1, 2).reshape(b * self.heads, t * self.k, 2)
        raw = raw.to(torch.promote_types(raw.dtype, torch.float32))
        query = position.to(raw.dtype).repeat_interleave(self.k)[:, None]  # (t * k, 1)
        if self.causal:
            mu = torch.sigmoid(raw[..., :1]) * query
        else:
            mu = (query + t * torch.tanh(raw[..., :1])).clamp(0, t - 1)
        sigma = reference.transform_sigmas(raw[..., 1], (t,), self.sigma_scale, self.min_sigma)
        return mu, sigma

    def forward(self, x: Tensor, generator: torch.Generator | int | Tensor | None = None) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 3 or x.shape[2] != self.emb:
            raise ValueError(f"x must have shape (b, t, emb={self.emb}), got {tuple(x.shape)}")
        check_generator(generator)
        triton = resolve(self.backend, x.device)
        seed = self._seed(x, generator) if self.training else None
        if self.checkpoint and torch.is_grad_enabled():
            out = recompute_in_backward(self._attend, x, seed, triton, use_reentrant=False)
        else:
            out = self._attend(x, seed, triton)
        return self.unify(out)

    def _seed(self, x: Tensor, generator) -> Tensor:
        """The ``()`` int64 seed of this step's samples (drawn once, outside any recompute)."""
        if generator is None and self.seed_source is not None:
            (generator,) = _draw_seed(self.seed_source, x)
        return seed_tensor(generator, x.device)

    def _attend(self, x: Tensor, seed: Tensor | None, triton: bool) -> Tensor:
        """``(b, t, emb)`` heads' outputs before ``unify``: the source network, projections,
        sampling (``eval_mode`` without a ``seed``), scores, the row softmax and the weighted
        values; what ``checkpoint=True`` recomputes in the backward."""
        b, t, _ = x.shape
        h, d = self.heads, self.emb // self.heads
        mu, sigma = self.key_positions(x)
        qkv = self.to_qkv(x).view(b, t, 3, h, d).permute(2, 0, 3, 1, 4)
        work = torch.promote_types(qkv.dtype, torch.float32)
        q, key, v = (part.reshape(b * h, t, d).to(work) for part in qkv)
        points, cols, keep, vprime = self._sample(mu, sigma, t, triton, seed)
        cols, keep, vprime = (part.view(b * h, t, -1) for part in (cols, keep, vprime))
        scores = library.contract_rows_dot(cols, key, q, triton)
        scores = (scores * vprime / math.sqrt(d)).masked_fill(~keep, float("-inf"))
        # every row keeps a key: duplicates keep their first copy, and a causal row's floor
        # corner (or rounded mean) is <= i; so no row is all -inf and the softmax has no NaN
        attention = torch.softmax(scores, dim=-1)
        out = library.contract_rows(cols, attention, v, triton)
        return out.view(b, h, t, d).transpose(1, 2).reshape(b, t, self.emb).to(x.dtype)

    def _sample(self, mu: Tensor, sigma: Tensor, t: int, triton: bool, seed: Tensor | None):
        """Sampled key positions of every (query, mean): ``points (B, t k, S, 1)``, flat
        ``cols``, ``keep`` and ``v'`` ``(B, t k S)``; without a ``seed`` (eval mode) the keys
        that ``eval_mode`` names."""
        B = mu.shape[0]
        n_local, n_global = self.n_local, self.n_global
        if seed is None and self.eval_mode != "round":
            seed = mu.new_zeros((), dtype=torch.int64)
            if self.eval_mode == "corners":  # no random samples: the seed is unused
                n_local, n_global = 0, 0
        if seed is not None:
            region = [min(self.region, t)]
            cantor = resolve_key_kind((t,)) == "cantor"
            points, keys, _, _ = library.sample(
                mu, seed, [t], 0, n_local, n_global, region, cantor, triton
            )
            cols = points[..., 0]  # one column: the flat index is the key position (one copy)
            duplicates = library.duplicate_mask(keys, self.k, triton)
            ones = mu.new_ones(mu.shape[:2])
            vprime, _ = library.proportions(
                points, mu, sigma, ones, duplicates, self.k, self.k, triton
            )
            keep = ~duplicates
        else:  # the rounded means, each key once per query
            points = mu.round().long()[:, :, None, :]
            cols = points[..., 0]
            keep = ~library.duplicate_mask(cols, self.k, triton)
            vprime = mu.new_ones(cols.shape)
        if self.causal:
            query = torch.arange(t, device=mu.device).repeat_interleave(self.k)[:, None]
            keep = keep & (points[..., 0] <= query)
        return points, cols.reshape(B, -1), keep.reshape(B, -1), vprime.reshape(B, -1)

    def extra_repr(self) -> str:
        return (
            f"emb={self.emb}, heads={self.heads}, k={self.k}, n_local={self.n_local}, "
            f"n_global={self.n_global}, region={self.region}, causal={self.causal}"
            + (", checkpoint=True" if self.checkpoint else "")
            + (f", eval_mode={self.eval_mode!r}" if self.eval_mode != "corners" else "")
        )
