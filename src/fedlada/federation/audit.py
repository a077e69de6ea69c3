"""The privacy audit: every encoded message is checked for the clients' private text before it is sent.

It runs at the one serialization point (`messages.encode`): the in-process channel audits each request
and each reply, the Flower ServerApp each request, and each SuperNode its own replies before they leave
the node. What is checked is the message's JSON header as encoded, walked recursively (every string
value and every dict key, at any depth), so new messages and nested records are covered without
changes here. The arrays block (weights, logits, features) is not text and is not checked.

Rules, per private example (a client's train or test example) and per string `s` of the header, both
normalised by deleting all whitespace and case-folding:

- **prompt / solution**: flagged when the private prompt or solution occurs in `s` as a whole-token
  substring: the match must not extend a letter or digit on either side (so the private `737+375=`
  is not flagged inside the public `1737+375=`, but is in `so 737 + 375 = ?`). Private strings
  shorter than `MIN_SUBSTRING` normalised characters are flagged only when `s` equals them.
- **sample id**: flagged when `s` equals a private sample id (for file sources an id names a line of
  a public dataset file, which would tell which question a client holds).
- **answer**: a final answer alone is a short number that legitimately appears everywhere (public
  answers, paths, scalars), so it is private only next to its question or id. An answer is therefore
  reported when the record holding a flagged prompt, solution or id (the same JSON object, or the same
  index of equal-length lists in one object, as the parallel lists of `TeacherPaths`) also holds a
  string equal to that example's answer; an answer on its own is never flagged.

Matching uses an Aho-Corasick automaton (pyahocorasick) over all private strings at once: one pass
over the message's text, whatever the number of clients and examples.
"""

from __future__ import annotations

import json
import re
import struct
import time
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass

import ahocorasick

from fedlada.data.types import Example
from fedlada.errors import PrivacyViolation

MIN_SUBSTRING = 6
_WS = re.compile(r"\s+")
_SEP = "\x00"  # joins the strings of a message; removed from private patterns so no match spans two


def normalise(text: str) -> str:
    """Whitespace deleted, case folded (per character, so positions map back to the original)."""
    return _WS.sub("", text).casefold().replace(_SEP, "")


def _original_span(text: str, start: int, end: int) -> tuple[int, int]:
    """Indices in `text` of the first and last original characters behind normalised `[start, end)`."""
    pos, first, last = 0, None, None
    for i, ch in enumerate(text):
        if ch.isspace() or ch == _SEP:
            continue
        width = len(ch.casefold())
        if first is None and pos + width > start:
            first = i
        pos += width
        if pos >= end:
            last = i
            break
    return first, last


def _word(ch: str) -> bool:
    return ch.isalnum()


@dataclass(frozen=True)
class _Private:
    client: str
    sample_id: str
    kind: str  # prompt | solution | id
    answer: str  # normalised


@dataclass
class _Leaf:
    path: str
    text: str
    record: int | None  # index into the message's records, or None


class Auditor:
    """Checks encoded messages against every client's private prompts, solutions and sample ids.

    Counts what it checked (`messages`, `bytes`, `seconds`) for the run's metrics."""

    def __init__(self, private: dict[str, Iterable[Example]]):
        self.automaton = ahocorasick.Automaton()
        self.exact: dict[str, _Private] = {}
        patterns: dict[str, _Private] = {}
        for client, examples in private.items():
            for e in examples:
                answer = normalise(e.answer)
                self.exact.setdefault(e.id, _Private(client, e.id, "id", answer))
                for kind, text in (("prompt", e.prompt), ("solution", e.solution)):
                    norm = normalise(text)
                    if not norm:
                        continue
                    entry = _Private(client, e.id, kind, answer)
                    if len(norm) < MIN_SUBSTRING:
                        self.exact.setdefault(norm, entry)
                    else:
                        patterns.setdefault(norm, entry)
        for norm, entry in patterns.items():
            self.automaton.add_word(norm, (len(norm), entry))
        self.empty = not patterns
        if not self.empty:
            self.automaton.make_automaton()
        self.messages = self.bytes = 0
        self.seconds = 0.0

    @classmethod
    def from_clients(cls, clients: dict[str, tuple[list[Example], list[Example]]]) -> Auditor:
        """From each client's (train, test) sets."""
        return cls({name: [*train, *test] for name, (train, test) in clients.items()})

    def take_counts(self) -> dict[str, float]:
        """What was audited since the last call: messages, bytes, seconds."""
        out = {"audit/messages": float(self.messages), "audit/bytes": float(self.bytes), "audit/seconds": self.seconds}
        self.messages = self.bytes = 0
        self.seconds = 0.0
        return out

    # ------------------------------------------------------------------------------------------
    def check(self, data: bytes, sender: str, receiver: str) -> None:
        """Raise PrivacyViolation if the encoded message `data` carries private text; count it."""
        start = time.perf_counter()
        try:
            (n,) = struct.unpack("<Q", data[:8])
            header = json.loads(data[8 : 8 + n])
            self._check_header(header, sender, receiver)
        finally:
            self.messages += 1
            self.bytes += len(data)
            self.seconds += time.perf_counter() - start

    def _check_header(self, header: dict, sender: str, receiver: str) -> None:
        leaves: list[_Leaf] = []
        records: list[list[int]] = []
        _walk(header.get("fields", {}), "", leaves, records, None)
        if not leaves:
            return
        texts = [normalise(leaf.text) for leaf in leaves]
        hit = self._first_hit(leaves, texts)
        if hit is None:
            return
        index, entry = hit
        leaf = leaves[index]
        where = f"field {leaf.path}" if leaf.path else "a field"
        what = {"prompt": "the private prompt", "solution": "the private solution", "id": "the private sample id"}[entry.kind]
        answer = ""
        if leaf.record is not None and entry.answer:
            for j in records[leaf.record]:
                if j != index and texts[j] == entry.answer:
                    answer = f", next to its answer in field {leaves[j].path}"
                    break
        raise PrivacyViolation(
            f"privacy audit: {header.get('type', '?')} from {sender} to {receiver}: {where} holds {what} of "
            f"sample {entry.sample_id} ({entry.client}){answer}; nothing was sent. Private text must not "
            "leave a client: send public samples' text or scalars only (runtime.audit=false turns the audit off)"
        )

    def _first_hit(self, leaves: list[_Leaf], texts: list[str]) -> tuple[int, _Private] | None:
        for i, t in enumerate(texts):
            if t in self.exact or leaves[i].text in self.exact:
                return i, self.exact.get(t) or self.exact[leaves[i].text]
        if self.empty:
            return None
        joined = _SEP.join(texts)
        starts, pos = [], 0
        for t in texts:
            starts.append(pos)
            pos += len(t) + 1
        for end, (length, entry) in self.automaton.iter(joined):
            i = bisect_right(starts, end) - 1
            local_end = end - starts[i] + 1
            local_start = local_end - length
            if self._whole_token(leaves[i].text, texts[i], local_start, local_end):
                return i, entry
        return None

    @staticmethod
    def _whole_token(original: str, norm: str, start: int, end: int) -> bool:
        """Whether normalised `[start, end)` neither begins right after nor ends right before a letter or
        digit of the original text (when the match itself begins / ends with one)."""
        first, last = _original_span(original, start, end)
        if _word(norm[start]) and first > 0 and _word(original[first - 1]):
            return False
        return not (_word(norm[end - 1]) and last + 1 < len(original) and _word(original[last + 1]))


def _walk(node, path: str, leaves: list[_Leaf], records: list[list[int]], record: int | None) -> None:
    """Every string (values and dict keys) under `node`, with its path and the record it belongs to."""
    if isinstance(node, str):
        leaves.append(_Leaf(path, node, record))
    elif isinstance(node, dict):
        own = len(records)
        records.append([])
        for n, (k, v) in enumerate(node.items()):
            sub = f"{path}.{k}" if path else str(k)
            leaves.append(_Leaf(f"{path or 'fields'} key #{n}", str(k), None))
            if isinstance(v, str):
                records[own].append(len(leaves))
                leaves.append(_Leaf(sub, v, own))
            elif not isinstance(v, list):
                _walk(v, sub, leaves, records, None)
        # Lists of one length in one object are parallel columns: element i of each forms record i.
        lists = {k: v for k, v in node.items() if isinstance(v, list)}
        rows: dict[tuple[int, int], int] = {}
        for k, v in lists.items():
            sub = f"{path}.{k}" if path else str(k)
            for i, item in enumerate(v):
                if isinstance(item, str):
                    key = (len(v), i)
                    if key not in rows:
                        rows[key] = len(records)
                        records.append([])
                    records[rows[key]].append(len(leaves))
                    leaves.append(_Leaf(f"{sub}[{i}]", item, rows[key]))
                else:
                    _walk(item, f"{sub}[{i}]", leaves, records, None)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _walk(item, f"{path}[{i}]", leaves, records, record)
