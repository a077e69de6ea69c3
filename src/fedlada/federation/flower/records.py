"""Project messages <-> Flower `RecordDict`s: the one place where the two meet.

Each dataclass field goes where Flower keeps its kind: scalars, text and flat lists of one type in
a `ConfigRecord`; dicts of numbers (reports' `values`) in a `MetricRecord`; dicts of arrays
(weights, logits, features) in an `ArrayRecord`. What Flower records cannot hold (None, nested or
mixed lists, other dicts) travels as JSON text in the ConfigRecord, exactly as `messages.encode`
writes it. A small header names the message type and how each field was stored, so decoding
needs no guessing and every registered message survives the round trip unchanged.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedlada.federation.messages import REGISTRY, Message, build, to_plain

HEADER = "fedlada"  # ConfigRecord: message type and the storage kind of each field
FIELDS = "fedlada.fields"  # ConfigRecord: scalars, flat lists, JSON text
METRICS = "fedlada.metrics."  # + field name: MetricRecord
ARRAYS = "fedlada.arrays."  # + field name: ArrayRecord

_SCALARS = (str, int, float, bool, bytes)


def _flat_list(value: list) -> list | None:
    """The list as a ConfigRecord can hold it (one exact scalar type), or None."""
    if not value:
        return value
    kind = type(value[0])
    if kind in _SCALARS and all(type(v) is kind for v in value):
        return value
    if all(isinstance(v, float) for v in value):  # numpy float64 and friends
        return [float(v) for v in value]
    return None


def _metrics(value: dict) -> dict | None:
    if not value or not all(isinstance(k, str) for k in value):
        return None
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) for v in value.values()):
        return {k: int(v) if isinstance(v, (int, np.integer)) else float(v) for k, v in value.items()}
    return None


def _is_arrays(value) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, np.ndarray) for v in value.values())


def to_record(msg: Message) -> RecordDict:
    rd = RecordDict()
    plain = ConfigRecord()
    kinds: dict[str, str] = {}
    shapes: dict[str, dict[str, list[int]]] = {}  # Flower's Array turns 0-d arrays into shape (1,)
    for f in dataclasses.fields(msg):
        value = getattr(msg, f.name)
        if _is_arrays(value):
            rd[ARRAYS + f.name] = ArrayRecord({k: Array(np.ascontiguousarray(a)) for k, a in value.items()})
            kinds[f.name] = "arrays"
            shapes[f.name] = {k: list(np.shape(a)) for k, a in value.items()}
        elif isinstance(value, dict) and (m := _metrics(value)) is not None:
            rd[METRICS + f.name] = MetricRecord(m)
            kinds[f.name] = "metrics"
        elif type(value) in _SCALARS:
            plain[f.name] = value
            kinds[f.name] = "scalar"
        elif isinstance(value, list) and (flat := _flat_list(value)) is not None:
            plain[f.name] = flat
            kinds[f.name] = "list"
        else:
            plain[f.name] = json.dumps(to_plain(value), ensure_ascii=False)
            kinds[f.name] = "json"
    rd[HEADER] = ConfigRecord({"type": type(msg).__name__, "kinds": json.dumps(kinds), "shapes": json.dumps(shapes)})
    rd[FIELDS] = plain
    return rd


def from_record(rd: RecordDict) -> Message:
    header = rd[HEADER]
    cls = REGISTRY[str(header["type"])]
    plain = rd[FIELDS]
    shapes = json.loads(str(header["shapes"]))
    fields = {}
    for name, kind in json.loads(str(header["kinds"])).items():
        if kind == "arrays":
            fields[name] = {k: a.numpy().reshape(shapes[name][k]) for k, a in rd[ARRAYS + name].items()}
        elif kind == "metrics":
            fields[name] = dict(rd[METRICS + name])
        elif kind == "json":
            fields[name] = json.loads(plain[name])
        elif kind == "list":
            fields[name] = list(plain[name])
        else:
            fields[name] = plain[name]
    return build(cls, fields)
