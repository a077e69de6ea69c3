"""Data files in the real datasets' formats: GSM8K JSONL and MathInstruct JSON / JSONL.

Why: users point fedlada at the datasets the LaDa paper used, so the loaders read them as
published (GSM8K: `question`, `answer` ending in `#### N` with `<<a*b=c>>` calculator notes;
MathInstruct: `instruction`, `output`, `source`). Either format may come as JSONL or as one JSON
list. Nothing is dropped silently: a malformed entry is an error reported with its 1-based line
number (`check_file` lists them all; `load_file_strict` makes a run fail before training with the
same messages), and an entry that is well formed but unusable here is skipped and counted by
reason. Example ids are `<file stem>-<line>` for JSONL; in a JSON list several entries may share a
line (a list written on one line), so there ids are `<file stem>-<entry number>` (1-based) and
errors name the entry too (`line 7: entry 2: missing field 'output'`). Skip reasons:

- `program-of-thought`: MathInstruct PoT entries (a `PoT` source or a Python program as output),
  whose answer only exists after running the program;
- `multiple-choice`: the question lists answer choices or the final answer is an option letter
  ("The answer is (B)"); the checker compares values, not letters;
- `no-final-answer`: no final answer can be found in the output.

A MathInstruct solution without a `####` line gets `#### <answer>` appended, so every solution in
the project ends the same way and `extract_answer(solution)` returns the gold answer. The answer of
an output whose last line states "The answer is X" / "Answer: X" is X (so a symbolic X such as
`\\sqrt{2}` is kept whole, where "the last number" would give 2); otherwise it is
`extract_answer(output)`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fedlada.data.answers import extract_answer, normalize_answer, parse_number, strip_calculator
from fedlada.data.types import Example

Format = Literal["gsm8k", "mathinstruct"]
FORMATS: tuple[str, ...] = ("gsm8k", "mathinstruct")

_POT_SOURCE = re.compile(r"(?:^|[/_.\-])pot(?:[/_.\-]|$)", re.IGNORECASE)
_PROGRAM = re.compile(r"^\s*(?:def \w+\(|import \w|from [\w.]+ import |print\()", re.MULTILINE)
_STATED_ANSWER = re.compile(r"\banswer\s*(?:is\s*:?|:)\s*(?P<answer>[^\n]+?)\s*$", re.IGNORECASE)
_OPTION = re.compile(r"(?i:option\s*)?(?:\([A-Ea-e]\)|[A-E])(?![\w^+\-*/])")
_ANSWER_CHOICES = re.compile(r"answer choices|options\s*:", re.IGNORECASE)


@dataclass
class LoadReport:
    """What loading a data file produced: usable examples, errors by line, skips by reason."""

    examples: list[Example]
    errors: list[tuple[int, str]]
    skipped: dict[str, int]
    format: str

    @property
    def ok(self) -> bool:
        """No errors and at least one usable example."""
        return not self.errors and bool(self.examples)

    def lines(self) -> list[str]:
        return [f"line {line}: {reason}" for line, reason in self.errors]


class DataFileError(Exception):
    """A data file with bad lines (or no usable example); the message lists every problem."""

    def __init__(self, path: str | Path, report: LoadReport):
        self.report = report
        super().__init__(_summary(path, report))


@dataclass
class _Entries:
    """Parsed JSON values as (line it starts on, entry number in a JSON list or None, value)."""

    values: list[tuple[int, int | None, object]] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)


def _read_jsonl(text: str) -> _Entries:
    entries = _Entries()
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines(): U+2028 is valid in JSON
        if not line.strip():
            continue
        try:
            entries.values.append((number, None, json.loads(line)))
        except json.JSONDecodeError as err:
            entries.errors.append((number, f"invalid JSON: {err.msg} (column {err.colno})"))
    return entries


_WHITESPACE = re.compile(r"\s*")


def _read_json_list(text: str) -> _Entries:
    """Elements of a top-level JSON list, each with the line it starts on.

    After a syntax error the rest of the list cannot be parsed reliably, so reading stops there
    and the error says so.
    """
    entries = _Entries()
    decoder = json.JSONDecoder()
    position = _WHITESPACE.match(text).end() + 1  # past the "["
    line, counted_to = 1, 0

    def line_at(index: int) -> int:
        nonlocal line, counted_to
        line += text.count("\n", counted_to, index)
        counted_to = index
        return line

    while True:
        position = _WHITESPACE.match(text, position).end()
        if text.startswith("]", position) and not entries.values:
            break
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as err:
            entries.errors.append((err.lineno, f"invalid JSON: {err.msg} (rest of the file not read)"))
            return entries
        entries.values.append((line_at(position), len(entries.values) + 1, value))
        position = _WHITESPACE.match(text, end).end()
        if text.startswith(",", position):
            position += 1
        elif text.startswith("]", position):
            break
        else:
            entries.errors.append((line_at(position), "invalid JSON: expected ',' or ']' (rest of the file not read)"))
            return entries
    if text[position + 1 :].strip():
        entries.errors.append((line_at(position), "invalid JSON: extra data after the list"))
    return entries


def _text_fields(value: object, names: tuple[str, ...]) -> tuple[dict[str, str], str | None]:
    """The named string fields of an entry, or the reason it lacks one."""
    if not isinstance(value, dict):
        return {}, f"expected a JSON object, got {type(value).__name__}"
    found = {}
    for name in names:
        if name not in value:
            return {}, f"missing field '{name}'"
        if not isinstance(value[name], str):
            return {}, f"field '{name}' is not a string ({type(value[name]).__name__})"
        if not value[name].strip():
            return {}, f"field '{name}' is empty"
        found[name] = value[name]
    return found, None


def _gsm8k_example(value: object, example_id: str) -> Example | str:
    """An Example, or the reason the entry is an error."""
    fields, problem = _text_fields(value, ("question", "answer"))
    if problem:
        return problem
    domain = "gsm8k"
    for key in ("domain", "source"):
        if key in value:
            extra, problem = _text_fields(value, (key,))
            if problem:
                return problem
            domain = extra[key]
            break
    solution = strip_calculator(fields["answer"]).strip()
    if "####" not in solution:
        return "answer has no '#### <final answer>' line"
    final = solution.rsplit("####", 1)[1].strip().split("\n", 1)[0]
    if parse_number(final) is None:
        return f"final answer {final!r} after #### is not a number"
    return Example(
        id=example_id,
        prompt=fields["question"] + "\n",
        solution=solution,
        answer=normalize_answer(final),
        domain=domain,
    )


def _mathinstruct_final_answer(output: str) -> str | None:
    if "####" not in output:
        last_line = output.strip().rsplit("\n", 1)[-1]
        stated = _STATED_ANSWER.search(last_line)
        if stated:
            return normalize_answer(stated["answer"])
    return extract_answer(output)


def _mathinstruct_example(value: object, example_id: str) -> Example | str | tuple[str]:
    """An Example, the reason the entry is an error, or `(skip_reason,)`."""
    fields, problem = _text_fields(value, ("instruction", "output", "source"))
    if problem:
        return problem
    output, source = fields["output"].strip(), fields["source"]
    if _POT_SOURCE.search(source) or _PROGRAM.search(output):
        return ("program-of-thought",)
    if _ANSWER_CHOICES.search(fields["instruction"]):
        return ("multiple-choice",)
    answer = _mathinstruct_final_answer(output)
    if answer is None:
        return ("no-final-answer",)
    if _OPTION.match(answer):
        return ("multiple-choice",)
    solution = output if "####" in output else f"{output}\n#### {answer}"
    return Example(id=example_id, prompt=fields["instruction"] + "\n", solution=solution, answer=answer, domain=source)


def _sniff_format(entries: _Entries, path: Path) -> str:
    for _, _, value in entries.values:
        if isinstance(value, dict):
            if "instruction" in value or "output" in value:
                return "mathinstruct"
            if "question" in value:
                return "gsm8k"
    raise ValueError(f"{path}: cannot tell the format (gsm8k or mathinstruct) from its entries; pass it")


def load_file(path: str | Path, format: Format | None = None) -> LoadReport:
    """Read a GSM8K or MathInstruct file (JSONL or a JSON list); `format=None` guesses from the fields.

    Raises OSError if the file cannot be read and ValueError if the format is unknown or cannot be
    guessed; everything about individual entries goes into the report.
    """
    path = Path(path)
    if format is not None and format not in FORMATS:
        raise ValueError(f"unknown data file format {format!r}; choose one of {', '.join(FORMATS)}")
    text = path.read_text(encoding="utf-8-sig")  # tolerate a byte-order mark
    entries = _read_json_list(text) if text.lstrip().startswith("[") else _read_jsonl(text)
    format = format or _sniff_format(entries, path)
    to_example = _gsm8k_example if format == "gsm8k" else _mathinstruct_example
    report = LoadReport(examples=[], errors=list(entries.errors), skipped={}, format=format)
    for line, entry, value in entries.values:
        result = to_example(value, f"{path.stem}-{entry or line}")
        if isinstance(result, Example):
            report.examples.append(result)
        elif isinstance(result, tuple):
            report.skipped[result[0]] = report.skipped.get(result[0], 0) + 1
        else:
            report.errors.append((line, f"entry {entry}: {result}" if entry else result))
    report.errors.sort()
    return report


def load_file_strict(path: str | Path, format: Format | None = None) -> LoadReport:
    """`load_file`, raising DataFileError unless the report is `ok`."""
    report = load_file(path, format)
    if not report.ok:
        raise DataFileError(path, report)
    return report


def check_file(path: str | Path, format: Format | None = None) -> tuple[str, int]:
    """The report `fedlada data check` prints, and its exit code (1 if the file is not usable)."""
    try:
        report = load_file(path, format)
    except (OSError, ValueError) as err:
        return f"{path}: {err}", 1
    return _summary(path, report), 0 if report.ok else 1


def _summary(path: str | Path, report: LoadReport) -> str:
    out = [f"{path}: {len(report.examples)} usable {report.format} examples"]
    out += [f"skipped {count} ({reason})" for reason, count in sorted(report.skipped.items())]
    out += report.lines()
    if report.errors:
        out.append(f"{len(report.errors)} error(s)")
    return "\n".join(out)
