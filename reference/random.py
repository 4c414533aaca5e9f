"""The counter-based random stream of the sampler, in plain torch (bit-exact with the kernel).

Sample ``t`` of column ``d`` of mean ``m`` of instance ``i`` draws word 0 of Philox 4x32-10 with
key ``(seed mod 2^32, seed >> 32)`` and counter ``(n mod 2^32, n >> 32, 0, 0)``, where
``n = ((i * k + m) * n_random + t) * r + d``. A uniform integer in ``[0, high)`` is
``(u * high) >> 32`` (``high < 2^31``; bias below ``high / 2^32``). Same seed, same stream, on
every device and in both backends; nothing depends on a device generator's state.

uint32 arithmetic is emulated in int64: a product of two 32-bit words is split in 16-bit halves
so that no intermediate overflows.
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


def _mul32(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(hi, lo)`` 32-bit words of ``a * b`` for a 32-bit constant ``a`` and int64 ``b < 2^32``."""
    a_hi, a_lo = a >> 16, a & 0xFFFF
    t1 = b * a_hi  # < 2^48
    t2 = b * a_lo  # < 2^48
    hi = (t1 + (t2 >> 16)) >> 16
    lo = (((t1 & 0xFFFF) << 16) + t2) & _LOW32
    return hi & _LOW32, lo


def philox_word0(seed: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    """Word 0 of Philox 4x32-10, as int64 in ``[0, 2^32)``.

    Args:
        seed: ``()`` int64 (any value; read as uint64).
        counter: ``(...)`` int64, non-negative.
    Returns:
        ``(...)`` int64.
    """
    k0 = seed & _LOW32
    k1 = (seed >> 32) & _LOW32
    c0 = counter & _LOW32
    c1 = (counter >> 32) & _LOW32
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    for _ in range(PHILOX_ROUNDS):
        hi_b, lo_b = _mul32(PHILOX_ROUND_B, c2)
        hi_a, lo_a = _mul32(PHILOX_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + PHILOX_KEY_A) & _LOW32
        k1 = (k1 + PHILOX_KEY_B) & _LOW32
    return c0
