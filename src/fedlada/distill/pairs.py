"""Which (preferred, dispreferred) path pairs DARD trains on (LaDa paper, arXiv 2602.18749).

The preferred path is always a verified-correct one, so the learner is never pushed toward a wrong
answer. The dispreferred path is the *learner's own* wrong path on the same prompt: the contrast then
targets exactly the reasoning the learner gets wrong. Where the learner has no wrong path (it was right,
or produced none), there is nothing to contrast and the pair keeps only the SFT anchor. A wrong teacher
path teaches nothing safe, so such samples are dropped rather than used as negatives.

Direction-agnostic: for the up direction (client -> server) the caller passes the client's paths as
`teacher_*` and the server's as `learner_*`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from fedlada.data.types import Example


@dataclass(frozen=True)
class PathRecord:
    """One candidate sample from the learner's point of view: each side's path and its verification.
    A path marked correct must exist (a correct flag on a missing path is a caller bug)."""

    sample_id: str
    prompt: str
    teacher_path: str | None
    teacher_correct: bool
    learner_path: str | None
    learner_correct: bool

    def __post_init__(self) -> None:
        for side in ("teacher", "learner"):
            if getattr(self, f"{side}_correct") and getattr(self, f"{side}_path") is None:
                raise ValueError(f"{self.sample_id}: {side}_correct without a {side}_path")


@dataclass(frozen=True)
class Pair:
    """`chosen` is always a correct path; `rejected` None means the SFT term only."""

    sample_id: str
    prompt: str
    chosen: str
    rejected: str | None


def build_pairs(records: Sequence[PathRecord]) -> list[Pair]:
    """Teacher right, learner wrong -> (teacher, learner); teacher right, learner right or missing ->
    SFT on the teacher path; teacher wrong -> dropped. Order of `records` is kept."""
    pairs = []
    for rec in records:
        if not rec.teacher_correct:
            continue
        rejected = rec.learner_path if rec.learner_path is not None and not rec.learner_correct else None
        pairs.append(Pair(rec.sample_id, rec.prompt, rec.teacher_path, rejected))
    return pairs


def local_pairs(
    examples: Sequence[Example],
    learner_paths: Sequence[str | None],
    learner_correct: Sequence[bool],
) -> list[Pair]:
    """Pairs on the learner's own data: the gold worked solution against the learner's wrong path, or
    SFT on the gold solution where the learner was right or has no path. Keeps the learner on its
    domain while it trains on transferred samples (docs/design-choices.md, own data mixed in)."""
    if not len(examples) == len(learner_paths) == len(learner_correct):
        raise ValueError(
            f"local_pairs: {len(examples)} examples, {len(learner_paths)} paths, {len(learner_correct)} flags"
        )
    return [
        Pair(ex.id, ex.prompt, ex.solution, path if path is not None and not ok else None)
        for ex, path, ok in zip(examples, learner_paths, learner_correct)
    ]


def contrast_view(chosen: str, rejected: str, contrast: str) -> tuple[str, str, str]:
    """`(given, chosen_rest, rejected_rest)`: what DARD's contrastive term scores of a pair, after `given`.

    `contrast="path"`: whole paths (given is empty). `contrast="divergence"` (a remedy): both paths
    start with the steps (lines) they share, and those steps are given, not scored. Why: with per-token
    margins a shared prefix does not cancel (it is weighted 1/|y+| on one side and 1/|y-| on the other),
    so a rejected path shorter than the chosen one lowers the likelihood of the correct steps it shares.
    Cut at a line boundary so that each side tokenizes the given steps and the rest separately, as it
    would tokenize lines anyway. Measured on `standard` (oracle picks, seeds 0-2): no better than whole
    paths (docs/results.md), so it stays an ablation."""
    if contrast == "path":
        return "", chosen, rejected
    if contrast != "divergence":
        raise ValueError(f"contrast: expected 'path' or 'divergence', got {contrast!r}")
    shared = os.path.commonprefix([chosen, rejected])
    cut = shared.rfind("\n") + 1  # 0: no whole step is shared
    return chosen[:cut], chosen[cut:], rejected[cut:]
