"""`math-mix`: procedural add / sub / mul and div by one digit, with digit-level worked solutions.

Why digit level: worked solutions beat answer-only targets by a wide margin for small models
(docs/quickstart.md), and whole-number steps (`48-57=-9`) fail inside the step; a column-by-column
solution with explicit carries/borrows makes every step a one-digit fact, so model capacity and
operand length (not step difficulty) decide accuracy. The formats:

    add  347+85=   7+5+0=12|4+8+1=13|3+0+1=04|#### 432     a+b+carry, two-digit column sum
    sub  523-287=  13-7-0=6|12-8-1=3|5-2-1=2|#### 236      leading 1 on the top digit = borrow
    mul  347*6=    7*6+0=42|4*6+4=28|3*6+2=20|#### 2082    digit*m+carry, two-digit product
    div  852/6=    08/6=1r2|25/6=4r1|12/6=2r0|#### 142      long division, exact: remainder*10+digit

Columns run from the least significant digit (div: from the most significant, as long division does);
the shorter operand is padded with 0. `div` is exact (the dividend is a multiple of the divisor) and
joined the first three later: a fourth domain that scenarios can give to no client (a distractor in
the public set), so a config that names no domains still gets add / sub / mul (`DEFAULT_TASKS`). Each task is a
domain, so clients can own operations. `generate` draws i.i.d. problems (repeats are possible in
small digit ranges); `partition` removes repeats across all splits.
"""

from __future__ import annotations

import operator
import random

from fedlada.data.types import Example

TASKS = ("add", "sub", "mul", "div")
DEFAULT_TASKS = ("add", "sub", "mul")
_OPERATORS = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
_RESULTS = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.floordiv}


def _columns(number: int, width: int) -> list[int]:
    """Digits from the least significant one, padded with zeros to `width`."""
    return [int(d) for d in reversed(str(number).zfill(width))]


def _add_steps(a: int, b: int) -> list[str]:
    width = max(len(str(a)), len(str(b)))
    steps, carry = [], 0
    for x, y in zip(_columns(a, width), _columns(b, width)):
        total = x + y + carry
        steps.append(f"{x}+{y}+{carry}={total:02d}")
        carry = total // 10
    return steps


def _sub_steps(a: int, b: int) -> list[str]:
    width = len(str(a))
    steps, borrow = [], 0
    for x, y in zip(_columns(a, width), _columns(b, width)):
        top = x + 10 if x - y - borrow < 0 else x
        steps.append(f"{top}-{y}-{borrow}={top - y - borrow}")
        borrow = 1 if top > x else 0
    return steps


def _mul_steps(a: int, m: int) -> list[str]:
    steps, carry = [], 0
    for x in _columns(a, len(str(a))):
        product = x * m + carry
        steps.append(f"{x}*{m}+{carry}={product:02d}")
        carry = product // 10
    return steps


def _div_steps(a: int, m: int) -> list[str]:
    steps, rest = [], 0
    for x in str(a):
        part = rest * 10 + int(x)
        steps.append(f"{part:02d}/{m}={part // m}r{part % m}")
        rest = part % m
    return steps


def worked_solution(task: str, a: int, b: int) -> str:
    """The digit-level solution of `a <op> b` (sub needs a >= b, mul and div need b in 2..9, div a
    multiple of b)."""
    if task == "add":
        steps = _add_steps(a, b)
    elif task == "sub":
        if a < b:
            raise ValueError(f"sub needs a >= b, got {a}-{b}")
        steps = _sub_steps(a, b)
    elif task == "mul":
        if not 2 <= b <= 9:
            raise ValueError(f"mul needs a one-digit multiplier 2-9, got {b}")
        steps = _mul_steps(a, b)
    elif task == "div":
        if not 2 <= b <= 9 or a % b:
            raise ValueError(f"div needs a one-digit divisor 2-9 of the dividend, got {a}/{b}")
        steps = _div_steps(a, b)
    else:
        raise ValueError(f"unknown math-mix task {task!r}; choose one of {', '.join(TASKS)}")
    return "|".join([*steps, f"#### {_RESULTS[task](a, b)}"])


def _operand(rng: random.Random, digits: tuple[int, int]) -> int:
    length = rng.randint(*digits)
    return rng.randint(10 ** (length - 1), 10**length - 1)


def generate(task: str, n: int, digits: tuple[int, int], seed: int, id_prefix: str) -> list[Example]:
    """`n` random problems of one task; the digit count of each operand is uniform in `digits`."""
    if task not in TASKS:
        raise ValueError(f"unknown math-mix task {task!r}; choose one of {', '.join(TASKS)}")
    low, high = digits
    if not 1 <= low <= high:
        raise ValueError(f"digit range must satisfy 1 <= low <= high, got {digits}")
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        a = _operand(rng, digits)
        b = rng.randint(2, 9) if task in ("mul", "div") else _operand(rng, digits)
        if task == "sub" and a < b:
            a, b = b, a
        if task == "div":  # the nearest multiple of b with a's digit count
            a = a - a % b if a - a % b >= 10 ** (len(str(a)) - 1) else a - a % b + b
        examples.append(
            Example(
                id=f"{id_prefix}-{i}",
                prompt=f"{a}{_OPERATORS[task]}{b}=",
                solution=worked_solution(task, a, b),
                answer=str(_RESULTS[task](a, b)),
                domain=task,
            )
        )
    return examples
