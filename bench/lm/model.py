"""A small byte-level transformer with one of three causal attentions at equal parameters.

Token and learned position embeddings, ``depth`` pre-LN blocks (``x + attn(LN(x))``, then
``x + FF(LN(x))`` with a GELU feed-forward of width ``ff``), a final LayerNorm and a linear head
over the 256 byte values. The attention of every block is one of:

- ``"dense"``: ``scaled_dot_product_attention(is_causal=True)`` (torch picks the kernel; on the
  CPU a fused flash-style kernel that never holds a ``(t, t)`` matrix);
- ``"window"``: causal sliding-window attention, query ``i`` over keys ``i - w + 1 .. i``
  (:func:`window_attention`: blocks of ``w`` queries against ``2w`` keys, memory ``O(t w)``);
- ``"sparse"``: :class:`hyperkern.SparseSelfAttention` with ``causal=True`` (``k`` learned key
  positions per query and head, ``2 + n_local + n_global`` samples each);
- ``"naive"``: the same function as ``"dense"`` written out, a ``(t, t)`` masked softmax (a
  reference point for time and memory: what dense attention costs without a fused kernel).

All three share the projections (``to_qkv`` without bias, ``unify`` with bias); the sparse one
adds its source network (``to_params``, width ``hidden``). With ``match_params`` the dense and
window models get a feed-forward wider by ``round(source params / (2 emb + 1))`` so the totals
agree to within ``emb`` parameters per block (:func:`ff_width`, :func:`parameter_count`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hyperkern import SparseSelfAttention
from hyperkern.seeds import fold_seed

KINDS = ("dense", "window", "sparse", "naive")


@dataclass(frozen=True)
class ModelConfig:
    """Model settings; ``ff`` (default ``4 emb``) is the sparse model's feed-forward width and
    ``hidden`` (default ``emb``) the width of its source network."""

    attention: str = "dense"
    seq: int = 512  # the longest sequence (the position table)
    vocab: int = 256

    # the transformer, the same for every attention (but the feed-forward width, see ff_width)
    emb: int = 64
    heads: int = 4
    depth: int = 2
    ff: int | None = None
    match_params: bool = True

    # keys per query of "window"
    window: int = 48

    # "sparse": k means per query and head, 2 + n_local + n_global samples each
    k: int = 8
    n_local: int = 2
    n_global: int = 2
    region: int = 8
    hidden: int | None = None
    backend: str = "auto"
    checkpoint: bool = False  # recompute the sampled attention in the backward

    def __post_init__(self) -> None:
        if self.attention not in KINDS:
            raise ValueError(f"attention must be one of {KINDS}, got {self.attention!r}")
        if self.emb % self.heads:
            raise ValueError(f"emb ({self.emb}) must be a multiple of heads ({self.heads})")
        for name in ("seq", "emb", "heads", "depth", "window", "k", "region", "vocab"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def info(self) -> dict[str, object]:
        return {**asdict(self), "ff_width": ff_width(self), "parameters": parameter_count(self)}


def source_parameters(cfg: ModelConfig) -> int:
    """Parameters of one sparse attention's source network ``emb + 1 -> hidden -> heads k 2``."""
    hidden, out = cfg.hidden or cfg.emb, cfg.heads * cfg.k * 2
    return (cfg.emb + 1) * hidden + hidden + hidden * out + out


def ff_width(cfg: ModelConfig) -> int:
    """The feed-forward width of ``cfg``'s model: ``ff`` for the sparse model, wider by the
    source network's parameters for dense and window ones when ``match_params``."""
    base = cfg.ff or 4 * cfg.emb
    if cfg.attention == "sparse" or not cfg.match_params:
        return base
    return base + round(source_parameters(cfg) / (2 * cfg.emb + 1))


def parameter_count(cfg: ModelConfig) -> int:
    """Trainable parameters of :class:`LanguageModel` ``(cfg)``, computed without building it."""
    e, f = cfg.emb, ff_width(cfg)
    attention = 3 * e * e + e * e + e + (source_parameters(cfg) if cfg.attention == "sparse" else 0)
    block = 2 * 2 * e + attention + (e * f + f) + (f * e + e)
    return (cfg.vocab + cfg.seq) * e + cfg.depth * block + 2 * e + e * cfg.vocab + cfg.vocab


def window_attention(q: Tensor, k: Tensor, v: Tensor, window: int) -> Tensor:
    """Causal sliding-window attention: query ``i`` attends to keys ``max(0, i - window + 1) ..
    i``. ``q, k, v`` are ``(..., t, d)``; so is the result.

    Queries go in blocks of ``w = window``; block ``n`` sees the keys of blocks ``n - 1`` and
    ``n`` (a ``(w, 2w)`` score tile, the keys unfolded from a copy padded by one block in front),
    so memory is ``O(t w)``, never ``(t, t)``.
    """
    *lead, t, d = q.shape
    w = min(window, t)
    blocks = -(-t // w)
    tail = blocks * w - t
    q = F.pad(q, (0, 0, 0, tail)).reshape(*lead, blocks, w, d)
    k = F.pad(k, (0, 0, w, tail)).unfold(-2, 2 * w, w)  # (..., blocks, d, 2w)
    v = F.pad(v, (0, 0, w, tail)).unfold(-2, 2 * w, w).transpose(-1, -2)  # (..., blocks, 2w, d)
    scores = (q @ k) / math.sqrt(d)  # (..., blocks, w, 2w)
    row = torch.arange(w, device=q.device)[:, None]  # query i = n w + row
    col = torch.arange(2 * w, device=q.device)  # key j = (n - 1) w + col
    allowed = (col > row) & (col <= row + w)  # i - w < j <= i
    first = torch.arange(blocks, device=q.device)[:, None, None] == 0
    allowed = allowed & ~(first & (col < w))  # block 0: no keys before position 0
    scores = scores.masked_fill(~allowed, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v  # (..., blocks, w, d)
    return out.reshape(*lead, blocks * w, d)[..., :t, :]


class CausalAttention(nn.Module):
    """Multi-head causal attention, dense (``window=None``), sliding-window or ``naive`` (an
    explicit ``(t, t)`` masked softmax); the projections are laid out as in
    :class:`hyperkern.SparseSelfAttention`. ``generator`` is ignored (it is there so that every
    attention takes the same call)."""

    def __init__(self, emb: int, heads: int, window: int | None = None, naive: bool = False):
        super().__init__()
        self.emb, self.heads, self.window, self.naive = emb, heads, window, naive
        self.to_qkv = nn.Linear(emb, 3 * emb, bias=False)
        self.unify = nn.Linear(emb, emb)

    def forward(self, x: Tensor, generator: object = None) -> Tensor:
        b, t, e = x.shape
        h = self.heads
        q, k, v = self.to_qkv(x).view(b, t, 3, h, e // h).permute(2, 0, 3, 1, 4)
        if self.window is not None:
            out = window_attention(q, k, v, self.window)
        elif self.naive:
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(e // h)
            future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            out = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.unify(out.transpose(1, 2).reshape(b, t, e))


def make_attention(cfg: ModelConfig) -> nn.Module:
    if cfg.attention in ("dense", "naive"):
        return CausalAttention(cfg.emb, cfg.heads, naive=cfg.attention == "naive")
    if cfg.attention == "window":
        return CausalAttention(cfg.emb, cfg.heads, window=cfg.window)
    sampling = dict(k=cfg.k, n_local=cfg.n_local, n_global=cfg.n_global, region=cfg.region)
    hidden = cfg.hidden or cfg.emb
    return SparseSelfAttention(
        cfg.emb, cfg.heads, causal=True, hidden=hidden, backend=cfg.backend,
        checkpoint=cfg.checkpoint, **sampling,
    )  # fmt: skip


class Block(nn.Module):
    """Pre-LN transformer block."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        width = ff_width(cfg)
        self.ln_attention, self.ln_ff = nn.LayerNorm(cfg.emb), nn.LayerNorm(cfg.emb)
        self.attention = make_attention(cfg)
        self.ff = nn.Sequential(nn.Linear(cfg.emb, width), nn.GELU(), nn.Linear(width, cfg.emb))

    def forward(self, x: Tensor, generator: int | None) -> Tensor:
        x = x + self.attention(self.ln_attention(x), generator=generator)
        return x + self.ff(self.ln_ff(x))


class LanguageModel(nn.Module):
    """Next-byte logits ``(b, t, vocab)`` for tokens ``(b, t)``, ``t <= cfg.seq``.

    ``seed`` (an int) fixes the samples of the sparse attentions in training mode (layer ``l``
    draws with ``fold_seed(seed, l)``); ``None`` uses torch's global generator. Dense and window
    models ignore it.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokens = nn.Embedding(cfg.vocab, cfg.emb)
        self.positions = nn.Embedding(cfg.seq, cfg.emb)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.ln = nn.LayerNorm(cfg.emb)
        self.head = nn.Linear(cfg.emb, cfg.vocab)

    def forward(self, tokens: Tensor, seed: int | None = None) -> Tensor:
        t = tokens.shape[1]
        if t > self.cfg.seq:
            raise ValueError(
                f"sequence of {t} tokens is longer than the model's seq {self.cfg.seq}"
            )
        x = self.tokens(tokens) + self.positions(torch.arange(t, device=tokens.device))
        for layer, block in enumerate(self.blocks):
            x = block(x, None if seed is None else fold_seed(seed, layer))
        return self.head(self.ln(x))


def bits_per_char(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy in bits of ``targets (b, t)`` under ``logits (b, t, vocab)``."""
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
    return loss / math.log(2)
