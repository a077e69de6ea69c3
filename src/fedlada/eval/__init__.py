"""Accuracy: greedy generation, then the one answer checker of `fedlada.data`."""

from __future__ import annotations

from dataclasses import dataclass

from fedlada.data.answers import is_correct
from fedlada.data.types import Example


@dataclass
class EvalResult:
    accuracy: float
    n: int
    correct: list[bool]


def evaluate(lm, examples: list[Example], *, max_new_tokens: int, batch_size: int) -> EvalResult:
    if not examples:
        return EvalResult(float("nan"), 0, [])
    outputs = lm.generate([e.prompt for e in examples], max_new_tokens, batch_size=batch_size)
    correct = [is_correct(out, e.answer) for out, e in zip(outputs, examples)]
    return EvalResult(sum(correct) / len(correct), len(correct), correct)
