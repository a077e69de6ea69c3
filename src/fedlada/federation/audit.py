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

import dataclasses
import json
import re
import struct
import time
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass

import ahocorasick

from fedlada.data.partition import FederationData
from fedlada.data.types import Example
from fedlada.errors import PrivacyViolation

MIN_SUBSTRING = 4
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


@dataclass(frozen=True)
class _Private:
    client: str
    sample_id: str
    kind: str  # prompt | solution | id
    answer: str  # normalised


class _Leaves:
    """The strings of one header, in order, with where each is (formatted only for the error) and
    the record (JSON object, or row of parallel lists) it belongs to."""

    def __init__(self):
        self.texts: list[str] = []
        self.where: list[tuple] = []  # (base path, index or key, is_dict_key)
        self.record: list[int] = []  # record id, or -1
        self.records: list[list[int]] = []

    def add(self, text: str, base: str, at, record: int, is_key: bool = False) -> None:
        if record >= 0:
            self.records[record].append(len(self.texts))
        self.texts.append(text)
        self.where.append((base, at, is_key))
        self.record.append(record)

    def new_record(self) -> int:
        self.records.append([])
        return len(self.records) - 1

    def path(self, i: int) -> str:
        base, at, is_key = self.where[i]
        if is_key:
            return f"{base or 'fields'} key #{at}"
        if at is None:
            return base
        if isinstance(at, int):
            return f"{base}[{at}]"
        return f"{base}.{at}" if base else str(at)


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
                if normalise(e.id):
                    self.exact.setdefault(normalise(e.id), _Private(client, e.id, "id", answer))
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
    def from_client_data(cls, clients: dict) -> Auditor:
        """From each client's `ClientData`: every list of examples in it (train, test, held-out) is private."""
        return cls({name: private_examples(cd) for name, cd in clients.items()})

    def take_counts(self) -> dict[str, float]:
        """What was audited since the last call: messages, bytes, seconds."""
        out = {"audit/messages": float(self.messages), "audit/bytes": float(self.bytes), "audit/seconds": self.seconds}
        self.messages = self.bytes = 0
        self.seconds = 0.0
        return out

    def matches(self, texts: list[str]) -> list[str | None]:
        """Per text, the id of the private example whose prompt, solution or id it holds (the rules
        above), or None: what a handler uses to drop its model's generations that reproduce private
        text before it replies (the audit would stop the reply)."""
        out = []
        for text in texts:
            norm = normalise(text)
            hit = self._first_hit([text], [norm]) if norm else None
            out.append(hit[1].sample_id if hit else None)
        return out

    # ------------------------------------------------------------------------------------------
    def check(self, data: bytes, sender: str, receiver: str, owner: str | None = None) -> None:
        """Raise PrivacyViolation if the encoded message `data` carries private text; count it.

        With `owner` (a client's reply), only that client's private data counts: a client cannot leak
        what it never had, and its model's text may by chance contain another client's short prompt."""
        start = time.perf_counter()
        try:
            (n,) = struct.unpack("<Q", data[:8])
            header = json.loads(data[8 : 8 + n])
            self._check_header(header, sender, receiver, owner)
        finally:
            self.messages += 1
            self.bytes += len(data)
            self.seconds += time.perf_counter() - start

    def _check_header(self, header: dict, sender: str, receiver: str, owner: str | None = None) -> None:
        leaves = _Leaves()
        _walk(header.get("fields", {}), "", leaves, -1)
        if not leaves.texts:
            return
        raw = _SEP.join(leaves.texts)
        if raw.count(_SEP) == len(leaves.texts) - 1:  # one regex pass for the whole message
            texts = _WS.sub("", raw).casefold().split(_SEP)
        else:  # a string holds the separator itself
            texts = [normalise(t) for t in leaves.texts]
        hit = self._first_hit(leaves.texts, texts, owner)
        if hit is None:
            return
        index, entry = hit
        what = {"prompt": "the private prompt", "solution": "the private solution", "id": "the private sample id"}[entry.kind]
        answer = ""
        record = leaves.record[index]
        if record >= 0 and entry.answer:
            for j in leaves.records[record]:
                if j != index and texts[j] == entry.answer:
                    answer = f", next to its answer in field {leaves.path(j)}"
                    break
        raise PrivacyViolation(
            f"privacy audit: {header.get('type', '?')} from {sender} to {receiver}: field {leaves.path(index)} holds "
            f"{what} of sample {entry.sample_id} ({entry.client}){answer}; nothing was sent. Private text must not "
            "leave a client: send public samples' text or scalars only (runtime.audit=false turns the audit off)"
        )

    def _first_hit(self, originals: list[str], texts: list[str], owner: str | None = None) -> tuple[int, _Private] | None:
        if not self.exact.keys().isdisjoint(texts):
            for i, t in enumerate(texts):
                if t in self.exact and owner in (None, self.exact[t].client):
                    return i, self.exact[t]
        if self.empty:
            return None
        joined = _SEP.join(texts)
        starts, pos = [], 0
        for t in texts:
            starts.append(pos)
            pos += len(t) + 1
        for end, (length, entry) in self.automaton.iter(joined):
            if owner is not None and entry.client != owner:
                continue
            i = bisect_right(starts, end) - 1
            local_end = end - starts[i] + 1
            if _whole_token(originals[i], texts[i], local_end - length, local_end):
                return i, entry
        return None


def _whole_token(original: str, norm: str, start: int, end: int) -> bool:
    """Whether normalised `[start, end)` neither begins right after nor ends right before a letter or
    digit of the original text (when the match itself begins / ends with one)."""
    if len(original) == len(norm):  # nothing was deleted or widened: positions are the same
        first, last = start, end - 1
    else:
        first, last = _original_span(original, start, end)
    if norm[start].isalnum() and first > 0 and original[first - 1].isalnum():
        return False
    return not (norm[end - 1].isalnum() and last + 1 < len(original) and original[last + 1].isalnum())


def private_examples(client_data) -> list[Example]:
    """Every example of a `ClientData` (each of its fields that is a list of `Example`s)."""
    return [e for f in dataclasses.fields(client_data) if isinstance(v := getattr(client_data, f.name), list)
            for e in v if isinstance(e, Example)]


def _walk(node, path: str, leaves: _Leaves, record: int) -> None:
    """Every string (values and dict keys) under `node`, with where it is and the record it belongs to."""
    if isinstance(node, str):
        leaves.add(node, path, None, record)
    elif isinstance(node, dict):
        own = leaves.new_record()
        rows: dict[tuple[int, int], int] = {}
        for n, (k, v) in enumerate(node.items()):
            leaves.add(str(k), path, n, -1, is_key=True)
            if isinstance(v, str):
                leaves.add(v, path, k, own)
            elif isinstance(v, list):
                # Lists of one length in one object are parallel columns: element i of each is record i.
                sub = f"{path}.{k}" if path else str(k)
                for i, item in enumerate(v):
                    if isinstance(item, str):
                        key = (len(v), i)
                        if key not in rows:
                            rows[key] = leaves.new_record()
                        leaves.add(item, sub, i, rows[key])
                    elif isinstance(item, (dict, list)):
                        _walk(item, f"{sub}[{i}]", leaves, -1)
            elif isinstance(v, dict):
                _walk(v, f"{path}.{k}" if path else str(k), leaves, -1)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            if isinstance(item, str):
                leaves.add(item, path, i, record)
            elif isinstance(item, (dict, list)):
                _walk(item, f"{path}[{i}]", leaves, record)


def auditor_for(data: FederationData) -> Auditor:
    """An Auditor over every client's private sets."""
    return Auditor.from_client_data({f"client-{i}": cd for i, cd in enumerate(data.clients)})
