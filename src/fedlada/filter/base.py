"""The selector interface of LaDa's learnability-aware data filter, and the ablation baselines.

One selector instance serves one (LLM, SLM) pair in one direction (the paper's per-pair filters): what a 56k-parameter
client can absorb from the server differs from what the server can absorb from it, so the two
directions and the pairs never share reward history.

Selectors see only a feature matrix (one row per candidate, filter/features.py) and scalar rewards, so the
same code serves both directions and every host; the caller maps positions back to sample ids.
Baselines that need side information the features do not carry receive it through `aux`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np


@dataclass
class Selection:
    """What a selector chose, in the order it prefers them (best first).

    `f1` / `f2` are EE-Net's predicted reward and potential gain, kept per row so the run can log how
    well the filter predicts the rewards it later observes; they are NaN for selectors without them.
    """

    indices: np.ndarray
    score: np.ndarray
    f1: np.ndarray
    f2: np.ndarray


class Selector(Protocol):
    name: str

    def select(
        self, features: np.ndarray, budget: int, *, aux: dict[str, np.ndarray] | None = None
    ) -> Selection: ...

    def update(self, features: np.ndarray, rewards: np.ndarray) -> dict: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def check_features(features: np.ndarray, n_features: int) -> np.ndarray:
    """Fail early on a feature matrix of the wrong shape: a silently mis-shaped matrix would train the
    filter on garbage for the rest of the run."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != n_features:
        raise ValueError(f"features: expected shape (n, {n_features}), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features: non-finite values")
    return x


def learner_nll(aux: dict[str, np.ndarray] | None, n: int, who: str) -> np.ndarray:
    """`aux["learner_nll"]` as float64, checked against the pool size; `who` names the rule that needs it."""
    if aux is None or "learner_nll" not in aux:
        raise ValueError(f"{who} needs aux['learner_nll']")
    nll = np.asarray(aux["learner_nll"], dtype=np.float64)
    if nll.shape != (n,):
        raise ValueError(f"aux['learner_nll']: expected shape ({n},), got {nll.shape}")
    return nll


def _no_scores(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    nan = np.full(k, np.nan)
    return nan, nan.copy(), nan.copy()


def _check_kind(state: dict, kind: str) -> None:
    if state.get("kind") != kind:
        raise ValueError(f"state of a {state.get('kind')!r} selector given to a {kind!r} selector")


class RandomSelector:
    """Ablation `filter=random`: uniform without replacement, from the selector's own generator so a
    resumed run draws exactly what an uninterrupted one would."""

    name = "random"

    def __init__(self, n_features: int, *, seed: int):
        self.n_features = n_features
        self._rng = np.random.default_rng(seed)

    def select(self, features, budget, *, aux=None):
        n = len(check_features(features, self.n_features))
        k = max(0, min(budget, n))
        indices = self._rng.choice(n, size=k, replace=False)
        score, f1, f2 = _no_scores(k)
        return Selection(indices, score, f1, f2)

    def update(self, features, rewards):
        return {}

    def state_dict(self):
        return {"kind": self.name, "rng": self._rng.bit_generator.state}

    def load_state_dict(self, state):
        _check_kind(state, self.name)
        self._rng.bit_generator.state = state["rng"]


class _Stateless:
    """Shared by the fixed-rule baselines: they learn nothing from rewards and keep no state."""

    name: str

    def __init__(self, n_features: int):
        self.n_features = n_features

    def update(self, features, rewards):
        return {}

    def state_dict(self):
        return {"kind": self.name}

    def load_state_dict(self, state):
        _check_kind(state, self.name)


class LossSelector(_Stateless):
    """Ablation `filter=loss`: the candidates whose teacher path the learner finds least likely
    (highest per-token NLL, `aux["learner_nll"]`) — the fixed "learn from what you get wrong" rule
    that the learned filter must beat (a strong fixed rule in the first measurements; on the testbeds of docs/results.md it is the worst)."""

    name = "loss"

    def select(self, features, budget, *, aux=None):
        n = len(check_features(features, self.n_features))
        nll = learner_nll(aux, n, "the 'loss' selector")
        k = max(0, min(budget, n))
        indices = np.argsort(-nll, kind="stable")[:k]
        _, f1, f2 = _no_scores(k)
        return Selection(indices, nll[indices], f1, f2)


class OracleSelector(_Stateless):
    """Ablation `filter=oracle`: an upper bound on what selection can give, never a real filter.

    It reads labels no filter has: which candidates belong to the learner's own domain
    (`aux["own_domain"]`) and whether the learner gets them wrong (`aux["learner_wrong"]`). It picks
    only own-domain candidates whose teacher path is correct (`aux["teacher_correct"]`), the
    learner-wrong ones first, each group by learner NLL (highest first), up to the budget. Where fewer
    qualify it picks fewer: padding with other domains' paths costs a small learner its own skill
    (measured: every correct path of all domains helps a client less than its own domain's alone).
    """

    name = "oracle"

    def select(self, features, budget, *, aux=None):
        n = len(check_features(features, self.n_features))
        need = ("own_domain", "teacher_correct", "learner_wrong", "learner_nll")
        if aux is None or any(k not in aux for k in need):
            raise ValueError(f"the 'oracle' selector needs aux[{', '.join(need)}]")
        own, ok, wrong, nll = (np.asarray(aux[k]) for k in need)
        for k, a in zip(need, (own, ok, wrong, nll)):
            if a.shape != (n,):
                raise ValueError(f"aux['{k}']: expected shape ({n},), got {a.shape}")
        eligible = np.flatnonzero(own.astype(bool) & ok.astype(bool))
        # lexsort: last key first -> learner-wrong before learner-right, then highest NLL
        order = eligible[np.lexsort((-nll[eligible].astype(np.float64), ~wrong[eligible].astype(bool)))]
        indices = order[: max(0, budget)]
        _, f1, f2 = _no_scores(len(indices))
        return Selection(indices, nll[indices].astype(np.float64), f1, f2)


class AllSelector(_Stateless):
    """Ablation `filter=none`: every candidate, the budget ignored — indiscriminate distillation."""

    name = "none"

    def select(self, features, budget, *, aux=None):
        n = len(check_features(features, self.n_features))
        score, f1, f2 = _no_scores(n)
        return Selection(np.arange(n), score, f1, f2)


def make_selector(
    kind: Literal["eenet", "random", "loss", "oracle", "none"],
    n_features: int,
    *,
    seed: int,
    alpha: float,
    hidden: int = 64,
    lr: float = 1e-2,
    steps: int = 50,
    replay: int = 4096,
    cold_start: Literal["kmeans", "lowest_nll"] = "kmeans",
    net_inputs: int | None = None,
) -> Selector:
    """The selector of an ablation config. `alpha`, `hidden`, `lr`, `steps`, `replay`, `cold_start` and `net_inputs`
    only concern `eenet` (see `EENetSelector`); the baselines accept and ignore them so one call site serves all."""
    if kind == "eenet":
        from fedlada.filter.eenet import EENetSelector  # eenet imports this module

        return EENetSelector(
            n_features, seed=seed, alpha=alpha, hidden=hidden, lr=lr, steps=steps, replay=replay, cold_start=cold_start,
            net_inputs=net_inputs,
        )
    if kind == "random":
        return RandomSelector(n_features, seed=seed)
    if kind == "loss":
        return LossSelector(n_features)
    if kind == "oracle":
        return OracleSelector(n_features)
    if kind == "none":
        return AllSelector(n_features)
    raise ValueError(f"unknown selector kind {kind!r}; choose eenet, random, loss, oracle or none")
