"""`gsm-symbolic`: GSM8K-style word problems with worked solutions, one domain per template.

Why: reasoning-gym's gsm_symbolic templates are derived from GSM8K problems and come with a
worked solution ending in `#### N` (`metadata["answer_cot"]`), so they give GSM8K-like data of any
size, deterministically. Calling the per-template generators directly (instead of the mixed
`create_dataset("gsm_symbolic")`) makes each template a domain that clients can own or that can
be held out. Only the templates reasoning-gym marks as working (`tasks_ok`) are used; a draw that
raises or whose solution's final line disagrees with its answer is skipped (the random stream
still advances, so skipping is deterministic). Like `mathmix.generate`, draws are i.i.d.; the
partition removes repeated questions across splits.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from reasoning_gym.arithmetic.gsm_symbolic import generators_00_49, generators_50_99
from reasoning_gym.arithmetic.gsm_symbolic.gsm_symbolic import tasks_ok

from fedlada.data.answers import answers_match, extract_answer
from fedlada.data.types import Example

TEMPLATES: tuple[int, ...] = tuple(tasks_ok)
_MAX_FAILURES = 100


def domain_name(template: int) -> str:
    return f"gsm-{template:02d}"


def template_index(name: str) -> int:
    """`"7"`, `"07"` or `"gsm-07"` -> 7, for a usable template."""
    text = name.removeprefix("gsm-")
    if not text.isdigit() or int(text) not in TEMPLATES:
        raise ValueError(f"gsm-symbolic domain {name!r}: not a usable template; choose from {TEMPLATES}")
    return int(text)


def _generator(template: int) -> Callable[[random.Random, float], dict]:
    if template not in TEMPLATES:
        raise ValueError(f"gsm-symbolic template {template} is not usable; choose from {TEMPLATES}")
    module = generators_00_49 if template < 50 else generators_50_99
    return getattr(module, f"generate_{template}")


def generate(template: int, n: int, seed: int, id_prefix: str) -> list[Example]:
    """`n` problems of one template (difficulty 1.0, the only one reasoning-gym supports)."""
    generator = _generator(template)
    rng = random.Random(seed)
    examples: list[Example] = []
    failures = 0
    while len(examples) < n:
        try:
            item = generator(rng, 1.0)
            solution = item["metadata"]["answer_cot"]
            answer = str(item["answer"])
            consistent = answers_match(extract_answer(solution), answer)
        except Exception:  # a template bug must cost one draw, not the whole dataset
            consistent = False
        if not consistent:
            failures += 1
            if failures > _MAX_FAILURES:
                raise RuntimeError(f"gsm-symbolic template {template}: more than {_MAX_FAILURES} failed draws")
            continue
        examples.append(
            Example(
                id=f"{id_prefix}-{len(examples)}",
                prompt=item["question"] + "\n",
                solution=solution,
                answer=answer,
                domain=domain_name(template),
            )
        )
    return examples
