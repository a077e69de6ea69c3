"""Cross-tokenizer transfer of per-token distributions, as FedMKT does it (arXiv 2406.02224).

Two models with different tokenizers see the same text as different token sequences over
different vocabularies. FedMKT bridges both gaps with edit distance:

- vocabulary mapping: each token of the sender's vocabulary goes to the receiver's token with the
  minimum edit distance to it (exact matches first; ties to the lowest receiver id), built for the
  whole sender vocabulary at once (`vocab_map`) and cached on disk, because between real vocabularies
  (49,152 and 262,144 tokens) it is 10^10 distances;
- token alignment: dynamic time warping over the two tokenizations of one text, with the edit distance
  between tokens as the local cost. Each receiver token takes the distribution of the first sender
  token aligned to it (the one whose prediction starts where it starts).

Edit distances come from rapidfuzz (C++, bit-parallel, several threads), not from a Python loop.
A distribution here is sparse: top-k ids and probabilities per token position (`Sparse`), so a mixture
of several sources is just their columns side by side (duplicate ids add up in a cross-entropy).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

_CHUNK_BYTES = 1 << 26  # distance rows computed at once: 64 MiB of int32, whatever the vocabulary size


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insert, delete, substitute, each cost 1) over code points."""
    return Levenshtein.distance(a, b)


def nearest_ids(tokens: Sequence[str], vocab: Sequence[str], *, workers: int = -1) -> np.ndarray:
    """Per token, the id in `vocab` at minimum edit distance from it, the lowest such id on ties (an
    exact match is at distance 0, so it is the token's first occurrence in `vocab`).

    Exact matches are looked up first: between real vocabularies most tokens have one (46,343 of
    SmolLM2's 49,152 are in Gemma 3's vocabulary), and only the rest need a row of distances to the
    whole of `vocab`, computed by `rapidfuzz.process.cdist` on `workers` threads (-1: all cores).
    """
    if not vocab:
        raise ValueError("nearest_ids: the vocabulary is empty")
    first: dict[str, int] = {}
    for i, tok in enumerate(vocab):
        first.setdefault(tok, i)
    ids = np.array([first.get(tok, -1) for tok in tokens], dtype=np.int64)
    missing = np.flatnonzero(ids < 0)
    rows = max(1, _CHUNK_BYTES // (4 * len(vocab)))
    for lo in range(0, len(missing), rows):
        part = missing[lo : lo + rows]
        dist = process.cdist([tokens[i] for i in part], vocab, scorer=Levenshtein.distance, dtype=np.int32,
                             workers=workers)
        ids[part] = dist.argmin(1)  # argmin returns the first minimum: the lowest id among the nearest
    return ids


def vocab_key(sender: Sequence[str], receiver: Sequence[str]) -> str:
    """A hash of both vocabularies, in order: the cache key of the map from one onto the other."""
    return hashlib.sha256(json.dumps([list(sender), list(receiver)]).encode()).hexdigest()


def vocab_map(sender: Sequence[str], receiver: Sequence[str], cache_dir: Path | None = None) -> np.ndarray:
    """`nearest_ids(sender, receiver)`: every sender id's receiver id (int32, one per sender token).

    With `cache_dir`, the map is kept in `cache_dir/vocab-maps/<vocab_key>.npy` (4 bytes per sender
    token) and read back from there by every later call with the same two vocabularies, since building
    it between real vocabularies takes minutes (docs/design-choices.md). Without, it is computed.
    """
    path = Path(cache_dir) / "vocab-maps" / f"{vocab_key(sender, receiver)}.npy" if cache_dir else None
    if path is not None and path.is_file():
        return np.load(path)
    ids = nearest_ids(sender, receiver).astype(np.int32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.stem}.partial-{os.getpid()}.npy")
        np.save(partial, ids)
        os.replace(partial, path)  # atomic: a concurrent reader sees the whole map or none
    return ids


def dtw_align(a: list[str], b: list[str]) -> list[tuple[int, int]]:
    """Monotone alignment path [(i, j), ...] from (0, 0) to (len(a)-1, len(b)-1) of minimum total
    edit distance; steps are diagonal, down or right, preferred in that order on ties."""
    if not a or not b:
        raise ValueError("dtw_align: both sequences must be non-empty")
    if a == b:
        return [(i, i) for i in range(len(a))]
    dist = {(x, y): edit_distance(x, y) for x in set(a) for y in set(b)}
    n, m = len(a), len(b)
    inf = float("inf")
    cost = [[inf] * (m + 1) for _ in range(n + 1)]
    cost[0][0] = 0.0
    for i in range(1, n + 1):
        prev, cur, x = cost[i - 1], cost[i], a[i - 1]
        for j in range(1, m + 1):
            cur[j] = dist[x, b[j - 1]] + min(prev[j - 1], prev[j], cur[j - 1])
    path, i, j = [], n, m
    while True:
        path.append((i - 1, j - 1))
        if i == 1 and j == 1:
            break
        steps = [(cost[i - 1][j - 1], i - 1, j - 1), (cost[i - 1][j], i - 1, j), (cost[i][j - 1], i, j - 1)]
        _, i, j = min(steps, key=lambda s: s[0])  # min keeps the first of equal costs: diagonal first
    return path[::-1]


def first_aligned(a: list[str], b: list[str]) -> np.ndarray:
    """For every position j of `b`, the first position of `a` aligned to it."""
    src = np.full(len(b), -1)
    for i, j in dtw_align(a, b):
        if src[j] < 0:
            src[j] = i
    return src


@dataclass
class Sparse:
    """Per-token sparse distributions of one sample: ids [T, k] (receiver vocabulary) and probs [T, k]."""

    ids: np.ndarray
    probs: np.ndarray


def project(sender_tokens: list[str], sender_topk: np.ndarray, sender_logp: np.ndarray,
            receiver_tokens: list[str], to_receiver: np.ndarray) -> Sparse:
    """The sender's top-k distributions moved onto the receiver's token positions and vocabulary.

    `*_tokens` are the completion tokens of the same text in each tokenization followed by the end
    token; the two ends are aligned to each other, the rest by DTW. `sender_topk` [T, k] are sender
    token indices, `to_receiver` maps them to receiver ids (`vocab_map` of the sender's vocabulary, with
    the end token sent to the receiver's end token); `sender_logp` [T, k] are their log-probs. Top-k
    probabilities are renormalised to sum to one.
    """
    if len(sender_tokens) > 1 and len(receiver_tokens) > 1:
        body = first_aligned(sender_tokens[:-1], receiver_tokens[:-1])
    else:  # an empty completion on one side: everything aligns to its first position
        body = np.zeros(len(receiver_tokens) - 1, dtype=int)
    src = np.append(body, len(sender_tokens) - 1)
    p = np.exp(sender_logp[src])
    return Sparse(to_receiver[sender_topk[src]], p / p.sum(1, keepdims=True))


def select_targets(candidates: list[Sparse], ce: np.ndarray, strategy: str) -> Sparse:
    """FedMKT's selective knowledge: from several models' distributions for one sample (each already on
    the learner's positions and vocabulary) and their cross-entropies on the sample's labels, `greater`
    takes the distribution of the model with the lowest cross-entropy; `weighted_mean` mixes all of
    them with weights proportional to exp(-CE)."""
    ce = np.asarray(ce, dtype=np.float64)
    if strategy == "greater":
        return candidates[int(np.argmin(ce))]
    if strategy == "weighted_mean":
        w = np.exp(-(ce - ce.min()))
        w /= w.sum()
        return Sparse(np.concatenate([c.ids for c in candidates], 1),
                      np.concatenate([c.probs * wi for c, wi in zip(candidates, w)], 1))
    raise ValueError(f"unknown strategy {strategy!r}; choose greater or weighted_mean")
