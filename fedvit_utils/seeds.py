"""One seed per concern (partition, training, keys), and seeds derived from them for each step.

A derived seed depends only on its parts, e.g. (training_seed, "client", round, client, epoch), so a
resumed run — or the same client in another process (Flower) — draws exactly what an uninterrupted
in-process run draws.
"""

from __future__ import annotations

import hashlib


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from a tuple of parts: stable across runs, processes and machines."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
