"""Every message that crosses between the server and a client, as plain dataclasses.

Only public questions, reasoning paths generated on public questions, scalars and (for hosts
that need them) arrays cross the wire; private questions, solutions and answers never appear
here. The codec below is the single serialization point: the in-process channel and the
Flower apps both go through it, so byte counts and privacy audits see every message.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import typing
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save


@dataclass
class Message:
    """Base class; subclasses are registered by name for decoding (`register`)."""


@dataclass
class Prepare(Message):
    """Server -> client: build your round-0 model (base training on your own data, cached locally)."""


@dataclass
class LocalTrain(Message):
    """Server -> client: one host local step (SFT on the client's private data)."""

    round: int
    steps: int


@dataclass
class Evaluate(Message):
    """Server -> client: evaluate on your private test set and on the global test set."""

    round: int


@dataclass
class TeacherPaths(Message):
    """Server -> client: reasoning paths of the server model on public questions.

    `correct` is the server's verification against the public gold answer."""

    round: int
    sample_ids: list[str]
    prompts: list[str]
    paths: list[str]
    correct: list[bool]


@dataclass
class Report(Message):
    """Client -> server: scalars only (accuracies, losses, seconds)."""

    values: dict[str, float] = field(default_factory=dict)


@dataclass
class Arrays(Message):
    """Named arrays (weights, logits, features) with scalars; used by later hosts and LaDa."""

    round: int
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)


REGISTRY: dict[str, type[Message]] = {}


def register(*classes: type[Message]) -> None:
    """Make message classes decodable. The codec registers its own types below; `fedlada.methods`
    registers every host's and LaDa's, explicitly, before the first message flows."""
    for cls in classes:
        REGISTRY[cls.__name__] = cls


register(Prepare, LocalTrain, Evaluate, TeacherPaths, Report, Arrays)


def to_plain(value: Any) -> Any:
    """A field value as JSON can hold it: records (dataclasses) become dicts, recursively in lists.
    Why records: a message about samples is a list of one record per sample id, so nothing has to
    keep parallel lists aligned."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    return value


def _record_type(hint) -> type | None:
    """R for a field annotated `list[R]` with R a dataclass (a list of records), else None."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is list and args and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None


def build(cls: type[Message], fields: dict[str, Any]) -> Message:
    """The message of type `cls` from decoded plain fields (records rebuilt from their dicts)."""
    hints = typing.get_type_hints(cls)
    for name, value in fields.items():
        record = _record_type(hints.get(name))
        if record is not None and value is not None:
            fields[name] = [v if isinstance(v, record) else record(**v) for v in value]
    return cls(**fields)


def encode(msg: Message) -> bytes:
    """Message -> bytes: a JSON header (type and plain fields) and a safetensors block of arrays."""
    header_fields: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for f in dataclasses.fields(msg):
        value = getattr(msg, f.name)
        if isinstance(value, dict) and value and all(isinstance(v, np.ndarray) for v in value.values()):
            for k, arr in value.items():
                arrays[f"{f.name}/{k}"] = np.ascontiguousarray(arr)
            header_fields[f.name] = {"__arrays__": list(value)}
        else:
            header_fields[f.name] = to_plain(value)
    header = json.dumps({"type": type(msg).__name__, "fields": header_fields}, ensure_ascii=False).encode()
    blob = st_save(arrays) if arrays else b""
    return struct.pack("<Q", len(header)) + header + blob


def decode(data: bytes) -> Message:
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    arrays = st_load(data[8 + n :]) if len(data) > 8 + n else {}
    cls = REGISTRY[header["type"]]
    fields = {}
    for name, value in header["fields"].items():
        if isinstance(value, dict) and "__arrays__" in value:
            value = {k: arrays[f"{name}/{k}"] for k in value["__arrays__"]}
        fields[name] = value
    return build(cls, fields)
