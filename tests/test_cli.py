"""The command line as a user meets it: exit codes and one-line errors."""

import json

from typer.testing import CliRunner

from fedlada.cli import app

runner = CliRunner()


def test_data_check_reports_bad_lines_and_exit_code(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"question": "What is 2+3?", "answer": "2+3=<<2+3=5>>5\n#### 5"}) + "\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text() + '{"question": "x", "answer": "no final line"}\n{not json\n')
    ok = runner.invoke(app, ["data", "check", str(good)])
    assert ok.exit_code == 0 and "1 usable gsm8k examples" in ok.output
    res = runner.invoke(app, ["data", "check", str(bad), "--format", "gsm8k"])
    assert res.exit_code == 1
    assert "line 2: answer has no '#### <final answer>' line" in res.output and "line 3: invalid JSON" in res.output


def test_run_with_a_bad_data_file_fails_before_training(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "x", "answer": "no final line"}\n')
    res = runner.invoke(app, ["run", "--set", "data.source=gsm8k", "--set", f"data.path={bad}", "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and "line 1: answer has no" in res.output and "nothing was trained" in res.output
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_config_errors_are_one_line_naming_the_key(tmp_path):
    res = runner.invoke(app, ["run", "--set", "lada.filtr=random", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and res.output.strip() == "error: lada.filtr: unknown key"
    res = runner.invoke(app, ["run", "--set", "lada.filter=best", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and res.output.startswith("error: lada.filter: Input should be") and res.output.count("\n") == 1


def test_accuracy_table_turns_when_clients_would_not_fit_across():
    from fedlada.cli_common import WIDE_TABLE, accuracy_table

    def rows(n_clients):
        return [{"round": t, "participant": f"client-{i}", "role": "client", "split": s, "accuracy": (10 * t + i) / 100}
                for t in range(3) for i in range(n_clients) for s in ("local_test", "global_test")]

    few = accuracy_table(rows(2), "few")  # rounds down
    assert len(few.columns) == 5 <= WIDE_TABLE and few.row_count == 3
    many = accuracy_table(rows(32), "many")  # participants down, one column per round
    assert [c.header for c in many.columns] == ["participant\n(test)", "round 0", "round 1", "round 2"]
    assert many.row_count == 64
    name, *values = (list(c._cells) for c in many.columns)
    assert [v[name.index("client-7 (own)")] for v in values] == ["7.0", "17.0", "27.0"]
