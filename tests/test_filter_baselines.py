"""The ablation selectors (DESIGN 4: filter=random|loss|none) and the factory."""

import numpy as np
import pytest

from fedlada.filter import make_selector


def feats(n, d=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


def test_loss_selector_takes_highest_learner_nll():
    sel = make_selector("loss", 4, seed=0, alpha=0.1)
    nll = np.array([0.1, 2.0, 0.5, 3.0, 1.0])
    s = sel.select(feats(5), 2, aux={"learner_nll": nll})
    assert s.indices.tolist() == [3, 1] and s.score.tolist() == [3.0, 2.0]
    assert np.isnan(s.f1).all() and np.isnan(s.f2).all()
    assert sel.select(feats(5), 9, aux={"learner_nll": nll}).indices.tolist() == [3, 1, 4, 2, 0]
    with pytest.raises(ValueError):
        sel.select(feats(5), 2)


def test_none_selector_returns_everything():
    s = make_selector("none", 4, seed=0, alpha=0.1).select(feats(7), 2)
    assert s.indices.tolist() == list(range(7)) and np.isnan(s.score).all()


def test_random_selector_is_seeded_distinct_and_resumable():
    x = feats(50)
    a, b, c = (make_selector("random", 4, seed=s, alpha=0.1) for s in (1, 1, 2))
    ia, ib, ic = (sel.select(x, 10).indices for sel in (a, b, c))
    assert ia.tolist() == ib.tolist() and ia.tolist() != ic.tolist()
    assert len(set(ia.tolist())) == 10 and ia.min() >= 0 and ia.max() < 50
    assert len(a.select(x[:3], 10).indices) == 3
    d = make_selector("random", 4, seed=99, alpha=0.1)
    d.load_state_dict(a.state_dict())
    assert d.select(x, 10).indices.tolist() == a.select(x, 10).indices.tolist()


def test_factory_and_state_checks():
    with pytest.raises(ValueError):
        make_selector("bogus", 4, seed=0, alpha=0.1)
    with pytest.raises(ValueError):
        make_selector("loss", 4, seed=0, alpha=0.1).load_state_dict({"kind": "random"})
    with pytest.raises(ValueError):
        make_selector("none", 4, seed=0, alpha=0.1).select(feats(5, d=3), 2)
