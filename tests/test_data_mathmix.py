import re

import pytest

from fedlada.data.answers import is_correct
from fedlada.data.mathmix import TASKS, generate, worked_solution
from fedlada.seeding import derive_seed

PROMPT = re.compile(r"(\d+)([+\-*/])(\d+)=")
DIV_STEP = re.compile(r"(\d+)/(\d)=(\d+)r(\d)")
STEP = re.compile(r"(\d+)([+\-*])(\d+)([+\-])(\d+)=(\d+)")


def test_exact_formats_from_findings():
    assert worked_solution("add", 347, 85) == "7+5+0=12|4+8+1=13|3+0+1=04|#### 432"
    assert worked_solution("sub", 523, 287) == "13-7-0=6|12-8-1=3|5-2-1=2|#### 236"
    assert worked_solution("mul", 347, 6) == "7*6+0=42|4*6+4=28|3*6+2=20|#### 2082"
    assert worked_solution("div", 852, 6) == "08/6=1r2|25/6=4r1|12/6=2r0|#### 142"


def test_edge_cases():
    assert worked_solution("add", 99, 1) == "9+1+0=10|9+0+1=10|#### 100"  # final carry
    assert worked_solution("sub", 100, 99) == "10-9-0=1|10-9-1=0|1-0-1=0|#### 1"  # no leading zeros
    assert worked_solution("mul", 12, 2) == "2*2+0=04|1*2+0=02|#### 24"
    with pytest.raises(ValueError):
        worked_solution("sub", 3, 5)
    with pytest.raises(ValueError):
        worked_solution("mul", 3, 12)
    assert worked_solution("div", 18, 9) == "01/9=0r1|18/9=2r0|#### 2"  # a leading zero quotient digit
    with pytest.raises(ValueError):
        worked_solution("div", 85, 6)  # not exact
    with pytest.raises(ValueError):
        generate("pow", 1, (2, 3), 0, "x")


@pytest.mark.parametrize("task", TASKS)
def test_generated_examples_are_right(task):
    examples = generate(task, 1000, (1, 5), derive_seed("test", task), "t")
    assert len(examples) == 1000 and len({e.id for e in examples}) == 1000
    lengths = set()
    for example in examples:
        a, op, b = PROMPT.fullmatch(example.prompt).groups()
        a, b = int(a), int(b)
        assert op == {"add": "+", "sub": "-", "mul": "*", "div": "/"}[task] and example.domain == task
        assert int(example.answer) == {"add": a + b, "sub": a - b, "mul": a * b, "div": a // b}[task]
        assert is_correct(example.solution, example.answer)
        assert example.solution.endswith(f"|#### {example.answer}")
        steps = example.solution.split("|")[:-1]
        assert len(steps) == max(len(str(a)), len(str(b)))
        if task == "div":  # every step is a true division, the remainder carried into the next digit
            assert a % b == 0 and 2 <= b <= 9
            rest = 0
            for step, digit in zip(steps, str(a)):
                part, m, q, r = map(int, DIV_STEP.fullmatch(step).groups())
                assert (part, m, q, r) == (rest * 10 + int(digit), b, part // b, part % b)
                rest = r
            lengths.add(len(str(a)))
            continue
        for step in steps:  # every column step is true arithmetic
            x, op1, y, op2, carry, result = STEP.fullmatch(step).groups()
            assert eval(f"{x}{op1}{y}{op2}{carry}") == int(result)
        if task == "mul":
            assert 2 <= b <= 9
        else:
            lengths.add(len(str(b)))
        if task == "sub":
            assert a >= b
        lengths.add(len(str(a)))
    assert lengths == {1, 2, 3, 4, 5}


def test_generation_is_deterministic_per_seed():
    assert generate("add", 50, (2, 3), 7, "a") == generate("add", 50, (2, 3), 7, "a")
    assert generate("add", 50, (2, 3), 7, "a") != generate("add", 50, (2, 3), 8, "a")
