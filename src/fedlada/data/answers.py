"""The one answer extractor and checker, used by training data, filters, rewards and evaluation.

Why one function: accuracy, rewards and the data filter's labels must agree on what "correct"
means, so every caller goes through `is_correct`. The final answer is the GSM8K `#### N` line when
there is one (every worked solution in this project ends with it), else the last `\\boxed{}`, else
the last number in the text. Numbers are compared exactly as fractions (`1,000` == `1000.0`,
`0.5` == `1/2`), within 1e-6 so that a rounded repeating decimal still matches its fraction.
`is_correct` runs on thousands of completions per round, so that path is a few regular
expressions; math-verify (5-10 ms a call, sympy-based) is only used for symbolic gold answers.
"""

from __future__ import annotations

import re
import threading
from fractions import Fraction
from functools import lru_cache

# A number as written in text: optional sign and `$`, thousands separators, decimals, `a/b`.
# The sign is kept only when it is not a binary minus (see `_last_number`).
_NUMBER = re.compile(
    r"(?<![\d.])(?P<sign>-?)\$?"
    r"(?P<num>(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)"
    r"(?:/(?P<den>\d+(?:\.\d+)?)(?!\d))?"
)
_CANONICAL = re.compile(r"-?(?:\d+(?:\.\d+)?|\.\d+)(?:/\d+(?:\.\d+)?)?")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\{\s*(-?\d+(?:\.\d+)?)\s*\}\{\s*(\d+(?:\.\d+)?)\s*\}")
# What may follow a leading number that is still the whole answer: `%`, a unit word (`18 dollars`),
# or a separator after which the model kept writing (`432|7+5`, `5, because`). Not `3x+2`.
_AFTER_NUMBER = re.compile(r"\s*(?:\\?%|[|,;]|\s[A-Za-z])")
_CALCULATOR = re.compile(r"<<[^<>]*>>")
_NUMBER_TOLERANCE = Fraction(1, 10**6)


def strip_calculator(text: str) -> str:
    """Remove GSM8K calculator annotations: `48/2 = <<48/2=24>>24` -> `48/2 = 24`."""
    return _CALCULATOR.sub("", text)


def _canonical(match: re.Match) -> str:
    number = match["sign"] + match["num"].replace(",", "")
    return f"{number}/{match['den']}" if match["den"] else number


def _last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (braces balanced), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth = 0
    begin = start + len("\\boxed{")
    for i in range(begin, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            if depth == 0:
                return text[begin:i]
            depth -= 1
    return None


def normalize_answer(text: str) -> str | None:
    """A final answer as written (`$1,234.`, `\\boxed{\\frac{1}{2}}`, `18 dollars`) -> `1234`, `1/2`, `18`.

    Numbers come back in canonical form (no `$`, separators or trailing period); anything else
    (a symbolic answer) comes back trimmed, for math-verify. Empty -> None.
    """
    s = text.strip()
    boxed = _last_boxed(s)
    if boxed is not None:
        s = boxed.strip()
    s = s.strip("$ ").rstrip(".").strip()
    s = _LATEX_FRAC.sub(r"\1/\2", s)
    match = _NUMBER.fullmatch(s)
    if match is None:
        match = _NUMBER.match(s)
        if match is not None and not _AFTER_NUMBER.match(s, match.end()):
            match = None
    if match is not None:
        return _canonical(match)
    return s or None


def _last_number(text: str) -> str | None:
    text = _LATEX_FRAC.sub(r"\1/\2", text)
    last = None
    for last in _NUMBER.finditer(text):
        pass
    if last is None:
        return None
    number = _canonical(last)
    start = last.start()
    if last["sign"] and start > 0 and (text[start - 1].isalnum() or text[start - 1] in ")]}"):
        number = number[1:]  # `10-5`: a binary minus, not a negative number
    return number


def extract_answer(text: str) -> str | None:
    """The final answer of a completion or worked solution, or None if it has none.

    `#### N` (text after the last `####`, first line) first, then the last `\\boxed{...}`,
    then the last number in the text.
    """
    if "####" in text:
        final = text.rsplit("####", 1)[1].strip().split("\n", 1)[0]
        answer = normalize_answer(final)
        if answer is not None:
            return answer
    boxed = _last_boxed(text)
    if boxed is not None:
        answer = normalize_answer(boxed)
        if answer is not None:
            return answer
    return _last_number(text)


def parse_number(text: str) -> Fraction | None:
    """The exact value of a numeric answer (`1,000`, `$3.50`, `1/2`, `\\frac{1}{2}`), else None."""
    answer = normalize_answer(text)
    if answer is None or not _CANONICAL.fullmatch(answer):
        return None
    numerator, _, denominator = answer.partition("/")
    value = Fraction(numerator)
    if denominator:
        divisor = Fraction(denominator)
        if divisor == 0:
            return None
        value /= divisor
    return value


def answers_match(pred: str | None, gold: str) -> bool:
    """Whether a predicted final answer equals the gold one; never raises.

    A numeric gold answer needs a numeric prediction: math-verify costs 5-10 ms a call and would
    only rescue expressions such as `2^3`, which are not final answers. Symbolic gold answers
    (`\\sqrt{2}`, `x^2+1`) go to math-verify.
    """
    if pred is None:
        return False
    try:
        gold_value = parse_number(gold)
        if gold_value is not None:
            pred_value = parse_number(pred)
            return pred_value is not None and abs(pred_value - gold_value) <= _NUMBER_TOLERANCE
        return _symbolic_match(pred, gold)
    except Exception:  # a checker that raises would abort a whole evaluation over one odd string
        return False


@lru_cache(maxsize=8192)
def _parse_symbolic(answer: str) -> tuple:
    from math_verify import parse  # imports sympy: only paid when a symbolic answer shows up

    # math-verify's timeout uses SIGALRM, which only works on the main thread.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    return tuple(parse(f"${answer.strip('$ ')}$", parsing_timeout=timeout))


def _symbolic_match(pred: str, gold: str) -> bool:
    if "".join(pred.split()) == "".join(gold.split()):
        return True
    from math_verify import verify

    parsed_gold, parsed_pred = _parse_symbolic(gold), _parse_symbolic(pred)
    if not parsed_gold or not parsed_pred:
        return False
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    return bool(verify(list(parsed_gold), list(parsed_pred), timeout_seconds=timeout))


def is_correct(completion: str, gold: str) -> bool:
    """Whether a completion's final answer equals the gold answer."""
    return answers_match(extract_answer(completion), gold)
