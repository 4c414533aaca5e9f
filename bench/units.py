"""Units of the bench reports (no torch: bench/report.py imports this too).

Bandwidths are decimal, ``GB/s = 1e9`` bytes per second; memory sizes are binary, ``GiB = 2**30``
bytes (never ``MiB / 1000``).
"""

from __future__ import annotations

GB = 10**9
KiB, MiB, GiB = 2**10, 2**20, 2**30


def to_gib(nbytes: float) -> float:
    """Bytes in GiB (``2**30``)."""
    return nbytes / GiB


def format_bytes(nbytes: float) -> str:
    """Binary units, three significant digits: ``2**21 -> "2 MiB"``, ``1253 MiB -> "1.22 GiB"``,
    ``1023 MiB -> "1023 MiB"``."""
    value, unit = float(nbytes), "B"
    for name, size in (("KiB", KiB), ("MiB", MiB), ("GiB", GiB)):
        if abs(nbytes) >= size:
            value, unit = nbytes / size, name
    text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text} {unit}"
