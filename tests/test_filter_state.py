"""save -> load -> continue equals an uninterrupted run, bit for bit, through a JSON + arrays split
(how the lead stores selector state: safetensors for arrays, JSON for the rest)."""

import json

import numpy as np

from fedlada.filter import make_selector


def through_storage(state: dict) -> dict:
    arrays = {k: v.copy() for k, v in state.items() if isinstance(v, np.ndarray)}
    rest = json.loads(json.dumps({k: v for k, v in state.items() if k not in arrays}))
    return {**rest, **arrays}


def rounds(sel, pools, rewards_of):
    out = []
    for x in pools:
        s = sel.select(x, 8)
        sel.update(x[s.indices], rewards_of(x[s.indices]))
        out.append((s.indices.copy(), s.score.copy(), s.f1.copy(), s.f2.copy()))
    return out


def test_eenet_resume_is_bit_identical():
    rng = np.random.default_rng(0)
    pools = [rng.normal(size=(60, 5)) for _ in range(5)]

    def rewards_of(x):
        return np.clip(np.sin(x[:, 0]) + 0.5 * x[:, 1] ** 2 - 0.3, 0, 1)

    kwargs = dict(alpha=0.1, hidden=32, steps=40, replay=20)  # replay cap hit before the save
    straight = rounds(make_selector("eenet", 5, seed=7, **kwargs), pools, rewards_of)

    first = make_selector("eenet", 5, seed=7, **kwargs)
    before = rounds(first, pools[:3], rewards_of)
    resumed = make_selector("eenet", 5, seed=12345, **kwargs)  # the state alone must determine the rest
    resumed.load_state_dict(through_storage(first.state_dict()))
    after = rounds(resumed, pools[3:], rewards_of)

    for got, want in zip(before + after, straight):
        for a, b in zip(got, want):
            assert np.array_equal(a, b, equal_nan=True)
