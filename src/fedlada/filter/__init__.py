"""LaDa's learnability-aware data filter: per-pair, per-direction sample selectors and their reward."""

from fedlada.filter.base import (
    AllSelector,
    LossSelector,
    OracleSelector,
    RandomSelector,
    Selection,
    Selector,
    make_selector,
)
from fedlada.filter.eenet import GRAD_DIM, EENetSelector
from fedlada.filter.reward import learnability_reward

__all__ = [
    "GRAD_DIM",
    "AllSelector",
    "EENetSelector",
    "LossSelector",
    "OracleSelector",
    "RandomSelector",
    "Selection",
    "Selector",
    "learnability_reward",
    "make_selector",
]
