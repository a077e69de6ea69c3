"""The `fedlada` command: run, report, data check."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from fedlada.config import ConfigError, RunConfig, config_from_dict, load_config

app = typer.Typer(help="Federated reasoning distillation between one server LLM and many client SLMs (LaDa).", no_args_is_help=True, add_completion=False)
data_app = typer.Typer(help="Inspect and validate data files.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console(width=None if sys.stdout.isatty() else 140)  # tables stay readable when piped to a log


def fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(2)


def accuracy_table(rows: list[dict], title: str) -> Table:
    from fedlada.report import accuracy_grid

    header, body = accuracy_grid(rows)
    table = Table(title=title)
    for h in header:
        table.add_column(h.replace(" (", "\n("), justify="right")
    for row in body:
        table.add_row(*row)
    return table


def _resolve_run(config: Optional[str], overrides: list[str], out: Optional[Path], resume: bool) -> tuple[RunConfig, Path]:
    import yaml

    cfg = load_config(config, overrides)
    out = out or Path("runs") / f"{cfg.name}-{cfg.method}-seed{cfg.seed}"
    saved_path = out / "config.yaml"
    if resume and saved_path.exists():
        saved = config_from_dict(yaml.safe_load(saved_path.read_text()))
        if (config or overrides) and saved != cfg:
            raise ConfigError(f"--resume: the given config differs from {saved_path}; drop CONFIG/--set to resume it as saved")
        cfg = saved
    elif not resume and (out / "metrics.jsonl").exists():
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it or --out for a new directory")
    return cfg, out


@app.command()
def run(
    config: Optional[str] = typer.Argument(None, help="YAML path or packaged config name (default: quickstart)"),
    set_: list[str] = typer.Option([], "--set", help="override, e.g. --set method=distill --set rounds=2"),
    out: Optional[Path] = typer.Option(None, "--out", help="run directory (default: runs/NAME-METHOD-seedSEED)"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last checkpoint"),
) -> None:
    """Run a federation in one process: round 0 (base models), then the configured rounds."""
    from fedlada.data.files import DataFileError
    from fedlada.federation.runner import Runner
    from fedlada.progress import RichUI
    from fedlada.report import write_report

    try:
        cfg, out = _resolve_run(config, set_, out, resume)
    except ConfigError as err:
        fail(str(err))
    ui = RichUI(Console(stderr=True))
    ui.log(f"run {out}: method={cfg.method} seed={cfg.seed} rounds={cfg.rounds} clients={len(cfg.clients)}")
    start = time.perf_counter()

    def on_round(t, rows):
        accs = ", ".join(f"{r['participant']} {r['split'].split('_')[0]} {100 * r['accuracy']:.1f}" for r in rows)
        ui.log(f"round {t}: {accs}")

    try:
        runner = Runner(cfg, out, ui)
        rows = runner.run(resume=resume, on_round=on_round)
    except DataFileError as err:
        for line in err.report.lines():
            console.print(line, highlight=False)
        fail(f"{cfg.data.path}: {len(err.report.errors)} bad line(s); nothing was trained")
    report = write_report(out)
    console.print(accuracy_table(rows, f"accuracy (%) — {cfg.method}, seed {cfg.seed}"))
    console.print(f"finished in {time.perf_counter() - start:.0f} s; run directory {out} (report: {report})")


@app.command()
def report(run_dir: Path = typer.Argument(..., help="a run directory holding metrics.jsonl")) -> None:
    """Rebuild report.md and accuracy.png of a run directory."""
    from fedlada.report import read_rows, write_report

    try:
        rows = read_rows(run_dir)
    except FileNotFoundError as err:
        fail(str(err))
    path = write_report(run_dir)
    console.print(accuracy_table(rows, str(run_dir)))
    console.print(f"wrote {path} and {run_dir / 'accuracy.png'}")


@data_app.command("check")
def data_check(
    path: Path = typer.Argument(..., help="a GSM8K JSONL or MathInstruct JSON/JSONL file"),
    format: Optional[str] = typer.Option(None, "--format", help="gsm8k | mathinstruct (default: detected)"),
) -> None:
    """Validate a data file: usable examples, skipped entries by reason, and `line N: reason` for bad lines."""
    from fedlada.data.files import check_file

    if format not in (None, "gsm8k", "mathinstruct"):
        fail(f"--format: expected gsm8k or mathinstruct, got {format!r}")
    if not path.exists():
        fail(f"{path}: no such file")
    text, code = check_file(path, format)
    console.print(text, highlight=False, markup=False)
    raise typer.Exit(code)
