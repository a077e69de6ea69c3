import json

import pytest

from fedlada.data.answers import is_correct
from fedlada.data.files import DataFileError, check_file, load_file, load_file_strict

GSM_LINES = [
    {"question": "Natalia sold 48 clips in April and half as many in May. How many in all?",
     "answer": "In May she sold 48/2 = <<48/2=24>>24 clips.\nIn all 48+24 = <<48+24=72>>72 clips.\n#### 72"},
    {"question": "A car costs 1,000 dollars and a bike 234. Together?",
     "answer": "1000 + 234 = <<1000+234=1234>>1234\n#### 1,234", "source": "prices"},
]

MATHINSTRUCT = [
    {"source": "data/CoT/gsm_rft.json", "instruction": "Tom has 3 apples and buys 4. How many?",
     "output": "3 + 4 = 7 apples.\nThe answer is 7."},
    {"source": "data/PoT/mathqa.json", "instruction": "Compute 2 + 2.",
     "output": "n0 = 2.0\nanswer = n0 + n0\nprint(answer)"},
    {"source": "data/CoT/MATH_train.json", "instruction": "Simplify sqrt(8)/2.",
     "output": "sqrt(8) = 2 sqrt(2), so we get $\\sqrt{2}$.\nThe answer is \\sqrt{2}"},
    {"source": "data/CoT/aqua_rat.json", "instruction": "Pick one. Answer Choices: (A) 1 (B) 2",
     "output": "It is 2.\nThe answer is B"},
    {"source": "data/CoT/gsm_rft.json", "instruction": "Say hi.", "output": "Hi there!"},
    {"source": "data/CoT/gsm_rft.json", "instruction": "What is 5*6?", "output": "5*6 = 30\n#### 30"},
]


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_good_gsm8k_file(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [GSM_LINES[0], "   ", GSM_LINES[1]])
    report = load_file(path)
    assert report.format == "gsm8k" and report.ok and report.errors == [] and report.skipped == {}
    first, second = report.examples
    assert first.id == "train-1" and second.id == "train-3"  # 1-based line numbers, blank line counted
    assert first.prompt == GSM_LINES[0]["question"] + "\n"
    assert first.solution == "In May she sold 48/2 = 24 clips.\nIn all 48+24 = 72 clips.\n#### 72"
    assert first.answer == "72" and first.domain == "gsm8k"
    assert second.answer == "1234" and second.domain == "prices"
    assert all(is_correct(e.solution, e.answer) for e in report.examples)
    assert check_file(path) == (f"{path}: 2 usable gsm8k examples", 0)


def check_mathinstruct(report, lines):
    assert report.format == "mathinstruct" and report.ok and report.errors == []
    assert report.skipped == {"program-of-thought": 1, "multiple-choice": 1, "no-final-answer": 1}
    assert [e.id.rsplit("-", 1)[1] for e in report.examples] == [str(n) for n in lines]
    apples, sqrt, product = report.examples
    assert apples.prompt == "Tom has 3 apples and buys 4. How many?\n"
    assert apples.solution == "3 + 4 = 7 apples.\nThe answer is 7.\n#### 7" and apples.answer == "7"
    assert apples.domain == "data/CoT/gsm_rft.json"
    assert sqrt.answer == r"\sqrt{2}" and sqrt.solution.endswith("\n#### \\sqrt{2}")
    assert product.solution == "5*6 = 30\n#### 30" and product.answer == "30"
    assert all(is_correct(e.solution, e.answer) for e in report.examples)


def test_good_mathinstruct_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "mi.jsonl", MATHINSTRUCT)
    check_mathinstruct(load_file(path), lines=[1, 3, 6])


def test_good_mathinstruct_json_list_reports_start_lines(tmp_path):
    path = tmp_path / "mi.json"
    path.write_text(json.dumps(MATHINSTRUCT, indent=2))  # each entry spans 5 lines after "["
    report = load_file(path, "mathinstruct")
    check_mathinstruct(report, lines=[1, 3, 6])  # ids of JSON list entries are entry numbers
    text, code = check_file(path)
    assert code == 0
    assert text.splitlines() == [
        f"{path}: 3 usable mathinstruct examples",
        "skipped 1 (multiple-choice)",
        "skipped 1 (no-final-answer)",
        "skipped 1 (program-of-thought)",
    ]


def test_malformed_gsm8k_lines_are_reported_with_line_numbers(tmp_path):
    good = json.dumps(GSM_LINES[0])
    rows = [
        good,
        good.replace("Natalia", "Nat"),
        '{"question": "broken", "answer": ',  # line 3: bad JSON
        good.replace("Natalia", "Nata"),
        json.dumps({"question": "No answer field"}),  # line 5
        json.dumps({"question": "Q", "answer": "It is 5."}),  # line 6: no ####
        json.dumps({"question": "Q", "answer": "so\n#### five"}),  # line 7: not a number
        json.dumps({"question": "", "answer": "#### 5"}),  # line 8: empty field
        json.dumps({"question": 5, "answer": "#### 5"}),  # line 9: not a string
        "[1, 2]",  # line 10: not an object
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    report = load_file(path, "gsm8k")
    assert [line for line, _ in report.errors] == [3, 5, 6, 7, 8, 9, 10]
    assert len(report.examples) == 3 and not report.ok
    assert report.lines()[1:] == [
        "line 5: missing field 'answer'",
        "line 6: answer has no '#### <final answer>' line",
        "line 7: final answer 'five' after #### is not a number",
        "line 8: field 'question' is empty",
        "line 9: field 'question' is not a string (int)",
        "line 10: expected a JSON object, got list",
    ]
    assert report.lines()[0].startswith("line 3: invalid JSON")
    text, code = check_file(path)
    assert code == 1
    assert text.splitlines()[0] == f"{path}: 3 usable gsm8k examples"
    assert text.splitlines()[1:8] == report.lines() and text.splitlines()[-1] == "7 error(s)"
    with pytest.raises(DataFileError) as raised:
        load_file_strict(path)
    assert str(raised.value) == text  # a run fails with the same messages as `data check`
    assert raised.value.report.errors == report.errors


def test_line_numbers_ignore_unicode_line_separators(tmp_path):
    row = dict(GSM_LINES[0], question="Clips\u2028sold?")
    path = tmp_path / "u.jsonl"
    path.write_text(json.dumps(row, ensure_ascii=False) + "\n" + json.dumps({"question": "Q"}) + "\n")
    assert load_file(path).errors == [(2, "missing field 'answer'")]


def test_malformed_json_list(tmp_path):
    entries = [dict(e) for e in MATHINSTRUCT[:3]]
    del entries[1]["output"]
    path = tmp_path / "mi.json"
    path.write_text(json.dumps(entries, indent=2))
    report = load_file(path)
    assert report.errors == [(7, "entry 2: missing field 'output'")]  # the entry opening on line 7
    path.write_text(json.dumps(entries))  # all on one line: the entry number still finds it
    assert load_file(path).lines() == ["line 1: entry 2: missing field 'output'"]

    text = json.dumps(MATHINSTRUCT[:2], indent=2).splitlines()
    text[8] = text[8].replace('",', '" oops,')  # a syntax error on line 9, inside the 2nd entry
    path.write_text("\n".join(text))
    report = load_file(path)
    assert [line for line, _ in report.errors] == [9]
    assert "rest of the file not read" in report.errors[0][1]
    assert len(report.examples) == 1

    path.write_text('[\n{"instruction": "Q?", "output": "#### 1", "source": "s"}\n{"instruction": "R?"}]')
    assert load_file(path).lines() == ["line 3: invalid JSON: expected ',' or ']' (rest of the file not read)"]


def test_unreadable_or_empty_files(tmp_path):
    text, code = check_file(tmp_path / "missing.jsonl")
    assert code == 1 and "missing.jsonl" in text
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert check_file(empty, "gsm8k") == (f"{empty}: 0 usable gsm8k examples", 1)
    with pytest.raises(DataFileError):
        load_file_strict(empty, "gsm8k")
    with pytest.raises(ValueError):
        load_file(empty)  # the format cannot be guessed from no entries
