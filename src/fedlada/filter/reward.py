"""The filter's reward: learnability realised by one update (DESIGN 3.3).

The relative drop of the learner's per-token NLL on the correct target path, measured before and after
the update on the selected batch. Relative, so a sample whose path was already likely cannot outscore a
hard one by sheer scale; clipped to [0, 1], so an update that made a path less likely is "no gain"
rather than a penalty that would teach the filter to avoid hard but useful regions.
"""

from __future__ import annotations

import numpy as np


def learnability_reward(nll_before: np.ndarray, nll_after: np.ndarray, has_target: np.ndarray) -> np.ndarray:
    """`clip((before - after) / before, 0, 1)`; 0 where there is no correct target path to measure on,
    and 0 where `before <= 0` (nothing left to learn). NaN NLLs of rows without a target are fine."""
    before = np.asarray(nll_before, dtype=np.float64)
    after = np.asarray(nll_after, dtype=np.float64)
    valid = np.asarray(has_target, dtype=bool) & np.isfinite(before) & np.isfinite(after) & (before > 0)
    gain = np.divide(before - after, before, out=np.zeros_like(before), where=valid)
    return np.clip(gain, 0.0, 1.0)
