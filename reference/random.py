"""The counter-based random stream of the sampler, in plain torch (bit-exact with the kernel).

Sample ``t`` of column ``d`` of mean ``m`` of instance ``i`` draws word 0 of Philox 4x32-10 with
key ``(seed mod 2^32, seed >> 32)`` and counter ``(n mod 2^32, n >> 32, 0, 0)``, where
``n = ((i * k + m) * n_random + t) * r + d``. A uniform integer in ``[0, high)`` is
``(u * high) >> 32`` (``high < 2^31``; bias below ``high / 2^32``). Same seed, same stream, on
every device and in both backends; nothing depends on a device generator's state.

uint32 arithmetic is emulated in int64: a product of two 32-bit words is one wrapping int64
product.
"""

from __future__ import annotations

import torch

from hyperkern._shared import (
    PHILOX_KEY_A,
    PHILOX_KEY_B,
    PHILOX_ROUND_A,
    PHILOX_ROUND_B,
    PHILOX_ROUNDS,
)

_LOW32 = 0xFFFFFFFF


# Counters per chunk: the ~6 int64 temporaries of a chunk (1 MiB each) stay in cache; one pass
# over a million counters at once ran 2.7x slower on the CPU.
_CHUNK = 1 << 17


def philox_word0(seed: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    """Word 0 of Philox 4x32-10, as int64 in ``[0, 2^32)``.

    Args:
        seed: ``()`` int64 (any value; read as uint64).
        counter: ``(...)`` int64, non-negative.
    Returns:
        ``(...)`` int64.
    """
    flat = counter.reshape(-1)
    out = torch.empty_like(flat)
    for start in range(0, flat.numel(), _CHUNK):
        out[start : start + _CHUNK] = _philox_word0(seed, flat[start : start + _CHUNK])
    return out.view(counter.shape)


def _philox_word0(seed: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    k0 = seed & _LOW32
    k1 = (seed >> 32) & _LOW32
    c0 = counter & _LOW32
    c1 = (counter >> 32) & _LOW32
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    for _ in range(PHILOX_ROUNDS):
        # int64 products wrap modulo 2^64 and so keep all 64 bits of the unsigned product: the
        # high word is bits 32..63. Only the words that are multiplied next (c0, c2) are masked
        # to 32 bits; c1 and c3 are only xor-ed into them before a mask.
        product_b, product_a = c2 * PHILOX_ROUND_B, c0 * PHILOX_ROUND_A
        c0 = (product_b >> 32).bitwise_xor_(c1).bitwise_xor_(k0).bitwise_and_(_LOW32)
        c2 = (product_a >> 32).bitwise_xor_(c3).bitwise_xor_(k1).bitwise_and_(_LOW32)
        c1, c3 = product_b, product_a
        k0 = (k0 + PHILOX_KEY_A) & _LOW32
        k1 = (k1 + PHILOX_KEY_B) & _LOW32
    return c0
