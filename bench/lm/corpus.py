"""The corpus: every ``*.py`` file of the Python standard library as bytes (tokens 0..255).

Files are listed under ``sysconfig.get_paths()["stdlib"]`` (or any folder given), sorted by
their relative POSIX path; folders named ``site-packages`` or ``dist-packages`` are left out,
since what is installed there differs from machine to machine. Each file goes to one split by a
hash of its relative path (:func:`split_of`), so the split does not depend on the listing, the
machine or the Python process (no ``hash()`` randomisation), and the test split consists of
held-out *files*. A split's files are concatenated in order into one ``uint8`` tensor; windows
may cross file boundaries.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

SPLITS = ("train", "valid", "test")
EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})


def stdlib_root() -> Path:
    """The standard library folder of the running interpreter."""
    return Path(sysconfig.get_paths()["stdlib"])


def list_files(root: str | Path) -> list[str]:
    """Relative POSIX paths of the ``*.py`` files under ``root``, sorted, without the excluded
    folders."""
    root = Path(root)
    found = []
    for path in root.rglob("*.py"):
        relative = path.relative_to(root)
        if path.is_file() and not EXCLUDED_DIRS.intersection(relative.parts[:-1]):
            found.append(relative.as_posix())
    return sorted(found)


def split_of(relative: str, valid: float = 0.05, test: float = 0.05) -> str:
    """``"train"``, ``"valid"`` or ``"test"`` for a file: the first 8 bytes of the SHA-256 of
    its relative path as a fraction ``u`` in [0, 1); test if ``u < test``, valid if
    ``u < test + valid``."""
    digest = hashlib.sha256(relative.encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test:
        return "test"
    return "valid" if u < test + valid else "train"


@dataclass
class Corpus:
    """The three splits as ``uint8`` tensors, with the files of each split."""

    root: str
    data: dict[str, Tensor]
    files: dict[str, list[str]] = field(default_factory=dict)

    def info(self) -> dict[str, object]:
        """Sizes per split and a digest of the file list (what was read), for results.json."""
        listing = "\n".join(f"{s}:{f}" for s in SPLITS for f in self.files[s])
        return {
            "root": self.root,
            "files": {s: len(self.files[s]) for s in SPLITS},
            "bytes": {s: int(self.data[s].numel()) for s in SPLITS},
            "listing_sha256": hashlib.sha256(listing.encode("utf-8")).hexdigest()[:16],
        }


def load_corpus(root: str | Path | None = None, valid: float = 0.05, test: float = 0.05) -> Corpus:
    """Read every file under ``root`` (default: :func:`stdlib_root`) into its split."""
    if not (valid >= 0 and test >= 0 and valid + test < 1):
        raise ValueError(f"valid ({valid}) and test ({test}) must be >= 0 with a sum below 1")
    root = Path(root) if root is not None else stdlib_root()
    files = list_files(root)
    if not files:
        raise ValueError(f"no *.py files under {root}")
    chunks: dict[str, list[bytes]] = {s: [] for s in SPLITS}
    names: dict[str, list[str]] = {s: [] for s in SPLITS}
    for relative in files:
        split = split_of(relative, valid, test)
        chunks[split].append((root / relative).read_bytes())
        names[split].append(relative)
    data = {s: _as_tensor(b"".join(chunks[s])) for s in SPLITS}
    return Corpus(str(root), data, names)


def _as_tensor(raw: bytes) -> Tensor:
    return (
        torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        if raw
        else torch.empty(0, dtype=torch.uint8)
    )


def random_windows(
    data: Tensor, seq: int, batch: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """``batch`` windows of ``seq + 1`` bytes at uniform random offsets (drawn with
    ``generator``): inputs and next-byte targets, both ``(batch, seq)`` int64."""
    if data.numel() < seq + 1:
        raise ValueError(f"a split of {data.numel()} bytes is shorter than seq + 1 = {seq + 1}")
    starts = torch.randint(0, data.numel() - seq, (batch,), generator=generator)
    chunk = data[starts[:, None] + torch.arange(seq + 1)].long()
    return chunk[:, :-1], chunk[:, 1:]


def eval_windows(data: Tensor, seq: int, max_chars: int | None = None) -> tuple[Tensor, Tensor]:
    """Non-overlapping windows of the split (every byte predicted at most once): inputs and
    targets ``(n, seq)``. With ``max_chars``, ``n = max_chars // seq`` windows spread evenly over
    the split (deterministic)."""
    available = (data.numel() - 1) // seq
    if available < 1:
        raise ValueError(f"a split of {data.numel()} bytes is shorter than seq + 1 = {seq + 1}")
    n = available if max_chars is None else max(1, min(available, max_chars // seq))
    starts = torch.linspace(0, available - 1, n).round().long() * seq
    chunk = data[starts[:, None] + torch.arange(seq + 1)].long()
    return chunk[:, :-1], chunk[:, 1:]
