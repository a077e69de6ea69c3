"""Seeds derived from names, so every random choice is reproducible and independent.

reasoning-gym datasets use `Random(seed + idx)` per item, so two datasets whose seeds are
close share items; hashing the parts keeps derived seeds far apart.
"""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any sequence of printable parts (e.g. `derive_seed(seed, "round", 3, "client-0")`)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
