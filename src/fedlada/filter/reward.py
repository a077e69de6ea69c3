"""The filter's rewards (`lada.reward`): what a pick did for the learner.

- `heldout` (default): the pick's share in lowering the learner's loss on its **own** held-out data
  (a private slice of its domain, never trained on, never sent). Per pick, the cosine between the
  gradient of its transferred path's loss and the gradient of the held-out loss, both at the learner
  as it was before the update: to first order, the update's effect on the held-out loss is the sum of
  the picks' gradients along that direction, so the cosine credits each pick with its part of it and
  ranks picks by what they do for the learner's own task (LESS, Xia et al. 2024, uses the same
  alignment for targeted selection). In [-1, 1]; a pick that pulls away from the own task scores
  below zero, one with nothing to learn (a wrong teacher path) as low as the round's worst pick. The realised drop of the held-out loss over the update is logged next to it.
- `heldout_contrast`: the same credit along a different direction, the unit held-out gradient minus
  the unit mean gradient of the round's offered (correct) paths. Why: every public path shares much of
  its gradient with the own task (the answer format, the digits), so plain `heldout` also pays off-domain
  picks (measured on `standard`, seed 0, round 1: the top 300 candidates by it are 74-81% own-domain for
  the add and sub clients, 21% for mul); what tells one candidate from another is what it does for the own
  task *beyond* the average candidate, as RHO-LOSS (Mindermann et al. 2022) scores a point by its loss
  against a reference rather than alone.
- `solved` (the up direction, `lada.up_reward`): whether the server now solves the picked question,
  which it got wrong when the client offered it (`solved_reward`).
- `nll_drop` (ablation, the first version): the relative drop of the learner's per-token NLL on the
  pick's correct path, `clip((before - after) / before, 0, 1)`. It pays for absorbing *any* path, and
  a small learner's NLL is lowest on its own domain, so it pays most for the samples that help least.
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


def heldout_alignment_reward(cosines: np.ndarray, has_target: np.ndarray) -> np.ndarray:
    """`lada.reward=heldout`: each pick's gradient cosine with the learner's held-out own-task loss; a pick
    with no correct path to learn from gets the round's lowest cosine (-1 if no pick has one).

    Why the round's lowest and not a fixed -1: such a pick trains nothing and spends budget, so it must
    not out-score the picks that pull slightly away from the own task (at 0 it would, and the filter
    learned to pick wrong teacher paths: 178 of a client's 300 picks in round 2 of `standard`, seed 0).
    But the cosines that matter, own-domain against other picks, differ by a few hundredths, and a -1
    next to them makes "the teacher path is correct" the only thing the filter's regression can see. (Since
    then the down filter chooses among correct teacher paths only, `lada/client.py`, so no pick lacks one.)"""
    cos = np.asarray(cosines, dtype=np.float64)
    valid = np.asarray(has_target, dtype=bool) & np.isfinite(cos)
    cos = np.clip(np.where(valid, cos, 0.0), -1.0, 1.0)
    floor = cos[valid].min() if valid.any() else -1.0
    return np.where(valid, cos, floor)


def solved_reward(solved_before: np.ndarray, solved_after: np.ndarray) -> np.ndarray:
    """The up direction's reward (`lada.up_reward=solved`): per pick, 1 where the server now solves the
    question it got wrong before the update, 0 where it still fails it, -1 where it lost one it solved.

    Why not the NLL drop on the client's path: the server lowers that on any path it trains on, its own
    domains included; what the up direction is for is the questions the server could not answer."""
    return np.asarray(solved_after, dtype=np.float64) - np.asarray(solved_before, dtype=np.float64)
