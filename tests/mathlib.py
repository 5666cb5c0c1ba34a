"""Which results this machine's floating-point math gives, for data pinned bit for bit.

NumPy picks its ``exp``, ``log``, ``sin``... at run time by CPU: its own AVX-512 loops where
the CPU has them, the C library's elsewhere. Both are within an ulp of the true value but
not always the same ulp, so a run whose genes pass through ``exp`` (log-scaled genes) can
differ in the last bit between two machines that run the same code. Data pinned bit for
bit (the GA reference runs, the shipped sample dataset) were recorded on one kind of
machine; a variant recorded by the same code on another kind sits beside it, named by
that machine's :func:`fingerprint`, and :func:`pinned` picks the one this machine matches.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

import numpy as np


@cache
def fingerprint() -> str:
    """12 hex digits naming the results of NumPy's transcendental functions here."""
    x = np.linspace(-30.0, 30.0, 1 << 14)
    y = np.geomspace(1e-8, 1e8, 1 << 14)
    results = (np.exp(x), np.exp(-x * x), np.log(y), np.log10(y), np.cos(x), np.sin(x))
    return hashlib.sha256(b"".join(r.tobytes() for r in results)).hexdigest()[:12]


def pinned(original: Path, variants: Path | None = None) -> Path:
    """The pinned data for this machine: the variant recorded on a machine with the same
    :func:`fingerprint` (``<variants>/<name>.<fingerprint><suffix>``) if there is one,
    else the original."""
    folder = original.parent if variants is None else variants
    variant = folder / f"{original.stem}.{fingerprint()}{original.suffix}"
    return variant if variant.exists() else original
