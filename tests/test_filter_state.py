"""save -> load -> continue equals an uninterrupted run, bit for bit, through a JSON + arrays split
(how the lead stores selector state: safetensors for arrays, JSON for the rest)."""

import json

import numpy as np
import pytest

from fedlada.filter import make_selector

KWARGS = dict(alpha=0.1, hidden=32, steps=40, replay=20)  # replay cap is hit before the saves


def through_storage(state: dict) -> dict:
    arrays = {k: v.copy() for k, v in state.items() if isinstance(v, np.ndarray)}
    rest = json.loads(json.dumps({k: v for k, v in state.items() if k not in arrays}))
    return {**rest, **arrays}


def rewards_of(x):
    return np.clip(np.sin(x[:, 0]) + 0.5 * x[:, 1] ** 2 - 0.3, 0, 1)


def reload(sel):
    fresh = make_selector("eenet", 5, seed=12345, **KWARGS)  # the state alone must determine the rest
    fresh.load_state_dict(through_storage(sel.state_dict()))
    return fresh


def run(pools, save_before_select=(), save_before_update=()):
    sel = make_selector("eenet", 5, seed=7, **KWARGS)
    out = []
    for t, x in enumerate(pools):
        if t in save_before_select:
            sel = reload(sel)
        s = sel.select(x, 8)
        if t in save_before_update:
            sel = reload(sel)
        sel.update(x[s.indices], rewards_of(x[s.indices]))
        out.append((s.indices, s.score, s.f1, s.f2))
    return out, sel.state_dict()


def test_eenet_resume_is_bit_identical():
    rng = np.random.default_rng(0)
    pools = [rng.normal(size=(60, 5)) for _ in range(6)]
    straight, final = run(pools)
    for saves in (dict(save_before_select={3}), dict(save_before_update={0, 4})):
        resumed, resumed_final = run(pools, **saves)
        for got, want in zip(resumed, straight):
            for a, b in zip(got, want):
                assert np.array_equal(a, b, equal_nan=True)
        for key, value in final.items():
            if isinstance(value, np.ndarray):
                assert np.array_equal(resumed_final[key], value), key
            else:
                assert resumed_final[key] == value, key


def test_eenet_update_needs_the_state_after_select():
    x = np.random.default_rng(1).normal(size=(30, 5))
    sel = make_selector("eenet", 5, seed=0, **KWARGS)
    before = sel.state_dict()
    s = sel.select(x, 4)
    stale = make_selector("eenet", 5, seed=0, **KWARGS)
    stale.load_state_dict(before)  # the pre-selection state: scaler has not seen this pool
    with pytest.raises(RuntimeError):
        stale.update(x[s.indices], np.ones(4))
    sel.update(x[s.indices], np.ones(4))
    with pytest.raises(RuntimeError):
        sel.update(x[s.indices], np.ones(4))
