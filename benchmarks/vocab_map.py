"""FedMKT's vocabulary map between real vocabularies: the old per-token Python path against
`distill.align.vocab_map` (exact matches, then rapidfuzz's `cdist`), both ways between SmolLM2-135M
(49,152 tokens) and Gemma-3-270M (262,144 tokens) (docs/design-choices.md).

    python benchmarks/vocab_map.py                 # both pairs; models from their packages (docs/models.md)
    python benchmarks/vocab_map.py --sample 3 --workers 1

For each direction it prints: the old path (a Python Levenshtein programme against every receiver
token) timed on `--sample` sender tokens that have no exact match and extrapolated to all of those,
the new path on the same tokens (their answers must agree), the full map built from scratch, the
cached map read back, and the bytes the sender's vocabulary adds to a FedMKT message. A model whose
package is missing is reported and left out.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from fedlada.config import ModelConfig
from fedlada.distill.align import nearest_ids, vocab_map
from fedlada.federation.messages import encode
from fedlada.hosts.fedmkt import Knowledge
from fedlada.models import load_model
from fedlada.models.loading import GEMMA3, SMOLLM2


def old_edit_distance(a: str, b: str) -> int:
    """The implementation `align.edit_distance` had before rapidfuzz (kept here only to time it)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def old_nearest(token: str, vocab: list[str]) -> int:
    """The old `VocabMap` lookup of a token without an exact match: one Python distance per receiver token."""
    return int(np.argmin([old_edit_distance(token, t) for t in vocab]))


def timed(fn):
    """`fn()`, its wall seconds and its CPU seconds (all threads): on a shared machine the CPU seconds
    are what the work itself costs."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, (time.perf_counter() - wall, time.process_time() - cpu)


def compare(sender_name: str, sender: list[str], receiver_name: str, receiver: list[str], sample: int,
            workers: int) -> None:
    known = set(receiver)
    missing = [t for t in sender if t not in known]
    print(f"\n{sender_name} ({len(sender):,} tokens) -> {receiver_name} ({len(receiver):,} tokens): "
          f"{len(sender) - len(missing):,} exact matches, {len(missing):,} to search")
    picked = random.Random(0).sample(missing, min(sample, len(missing)))
    old, (old_s, old_cpu) = timed(lambda: [old_nearest(t, receiver) for t in picked])
    new, (new_s, new_cpu) = timed(lambda: nearest_ids(picked, receiver, workers=workers).tolist())
    assert old == new, "the old and the new path disagree"
    hours = old_cpu / len(picked) * len(missing) / 3600
    print(f"  old Python path: {old_s / len(picked):.2f} s per token (CPU {old_cpu / len(picked):.2f} s) -> "
          f"{hours:.1f} CPU hours for all {len(missing):,}")
    print(f"  new path on the same {len(picked)} tokens: {new_s / len(picked) * 1000:.1f} ms per token "
          f"(CPU {new_cpu / len(picked) * 1000:.1f} ms; same answers)")
    with tempfile.TemporaryDirectory() as cache:
        full, (full_s, full_cpu) = timed(lambda: vocab_map(sender, receiver, Path(cache)))
        again, (again_s, _) = timed(lambda: vocab_map(sender, receiver, Path(cache)))
    assert np.array_equal(full, again)
    print(f"  full map, built: {full_s:.1f} s wall, {full_cpu:.1f} CPU s; read back from the cache: "
          f"{again_s * 1000:.0f} ms ({full.nbytes / 1e6:.2f} MB on disk)")
    empty = len(encode(Knowledge(0, [], [], [], [], {})))
    print(f"  the sender's vocabulary in a Knowledge message: "
          f"{(len(encode(Knowledge(0, [], [], [], sender, {}))) - empty) / 1e6:.2f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=int, default=5, help="tokens timed on the old path, per direction")
    parser.add_argument("--workers", type=int, default=-1, help="rapidfuzz threads (-1: all cores)")
    args = parser.parse_args()
    vocabs = {}
    for name in (SMOLLM2, GEMMA3):
        try:
            vocabs[name] = load_model(ModelConfig(name=name)).vocab_strings()
        except ModuleNotFoundError as err:
            print(f"{name}: left out ({err})")
    if len(vocabs) < 2:
        return
    compare(SMOLLM2, vocabs[SMOLLM2], GEMMA3, vocabs[GEMMA3], args.sample, args.workers)
    compare(GEMMA3, vocabs[GEMMA3], SMOLLM2, vocabs[SMOLLM2], args.sample, args.workers)


if __name__ == "__main__":
    main()
