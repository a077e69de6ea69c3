"""Every registered message survives the trip through Flower records (and Flower's wire format)."""

import dataclasses
import typing

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the Flower tests need the flower extra (pip install -e '.[dev]')")

from flwr.common.serde import recorddict_from_proto, recorddict_to_proto  # noqa: E402

from fedlada.federation.flower.node import CONTROL_MESSAGES  # noqa: E402
from fedlada.federation.flower.records import from_record, to_record  # noqa: E402
from fedlada.federation.messages import REGISTRY, Report, encode  # noqa: E402
from fedlada.methods import register_protocol  # noqa: E402

register_protocol("standalone", *CONTROL_MESSAGES)  # what the Flower apps register: every method's messages and their own

TEXT = "ünïcødé ∑ 数学 🚀\nline two \"quoted\" \\ back"


def _value(hint, variant: str):
    """A value of the annotated type: 'full' (unicode, several items) or 'empty' (empty containers)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    empty = variant == "empty"
    if hint is str:
        return "" if empty else TEXT
    if hint is bool:
        return True
    if hint is int:
        return -(2**40) if not empty else 0
    if hint is float:
        return 1.25e-9 if not empty else 0.0
    if origin is list:
        if empty:
            return []
        return [_value(args[0], "full"), _value(args[0], "full") if args[0] is not bool else False]
    if origin is dict and args[1] is np.ndarray:
        if empty:
            return {"none": np.zeros((0, 3))}
        return {"big": np.random.default_rng(0).standard_normal((600, 1000)).astype(np.float32),  # 2.4 MB
                "ids/int": np.arange(7, dtype=np.int64), "scalar": np.array(3.5)}
    if origin is dict:
        return {} if empty else {"local_test/accuracy": 0.5, "local_test/n": 12, "nan": float("nan")}
    if dataclasses.is_dataclass(hint):  # a record inside a list (LaDa's messages): every field full
        hints = typing.get_type_hints(hint)
        return hint(**{f.name: _value(hints[f.name], "full") for f in dataclasses.fields(hint)})
    raise AssertionError(f"no test value for {hint}; extend _value")


def _instances():
    for name in sorted(REGISTRY):
        cls = REGISTRY[name]
        hints = typing.get_type_hints(cls)
        for variant in ("full", "empty"):
            yield pytest.param(cls(**{f.name: _value(hints[f.name], variant) for f in dataclasses.fields(cls)}),
                               id=f"{name}-{variant}")


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and np.isnan(a):
        return isinstance(b, float) and np.isnan(b)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("msg", list(_instances()))
def test_round_trip_through_flower_records(msg):
    wire = recorddict_from_proto(recorddict_to_proto(to_record(msg)))  # as a SuperLink would carry it
    back = from_record(wire)
    assert type(back) is type(msg)
    for f in dataclasses.fields(msg):
        assert _same(getattr(msg, f.name), getattr(back, f.name)), f.name
    assert encode(back) == encode(msg)  # so the byte count is the same as in-process


def test_values_that_records_cannot_hold_travel_as_json():
    msg = REGISTRY["TeacherPaths"](round=1, sample_ids=["a"], prompts=["b"], paths=["c"], correct=[True])
    msg.prompts = [["nested", None], 1.5, "mixed"]  # not what TeacherPaths sends, but must not break
    back = from_record(to_record(msg))
    assert back.prompts == [["nested", None], 1.5, "mixed"] and back.sample_ids == ["a"]
    assert from_record(to_record(Report({"x": np.float64(2.0), "n": np.int64(3)}))).values == {"x": 2.0, "n": 3}
