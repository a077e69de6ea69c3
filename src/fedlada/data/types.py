"""The one record every data source produces."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """A reasoning problem.

    `prompt` is exactly the text a model is conditioned on; `solution` is the worked
    solution the model should produce after it (it ends with ``#### <answer>``); `answer`
    is the gold final answer alone. `domain` names the task family / template / source the
    example comes from and is what domain partitioning and domain affinity use.
    """

    id: str
    prompt: str
    solution: str
    answer: str
    domain: str
