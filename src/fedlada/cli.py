"""The `fedlada` command: run, compare, report, data check."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from fedlada.cli_common import accuracy_table, console, fail, one_line_errors, resolve_run
from fedlada.config import ConfigError
from fedlada.federation.flower.cli import flower_app  # Flower itself is imported lazily

app = typer.Typer(help="Federated reasoning distillation between one server LLM and many client SLMs (LaDa).", no_args_is_help=True, add_completion=False)
data_app = typer.Typer(help="Inspect and validate data files.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(flower_app, name="flower")


@app.command()
def run(
    config: Optional[str] = typer.Argument(None, help="YAML path or packaged config name (default: quickstart)"),
    set_: list[str] = typer.Option([], "--set", help="override, e.g. --set method=distill --set rounds=2"),
    out: Optional[Path] = typer.Option(None, "--out", help="run directory (default: runs/NAME-METHOD-seedSEED)"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last checkpoint"),
) -> None:
    """Run a federation in one process: round 0 (base models), then the configured rounds."""
    from fedlada.runner import Runner
    from fedlada.progress import RichUI
    from fedlada.report import write_report

    try:
        cfg, out = resolve_run(config, set_, out, resume)
    except ConfigError as err:
        fail(str(err))
    ui = RichUI(Console(stderr=True))
    ui.log(f"run {out}: method={cfg.method} seed={cfg.seed} rounds={cfg.rounds} clients={len(cfg.clients)}")
    start = time.perf_counter()

    def on_round(t, rows):
        accs = ", ".join(f"{r['participant']} {r['split'].split('_')[0]} {100 * r['accuracy']:.1f}" for r in rows)
        ui.log(f"round {t}: {accs}")

    with one_line_errors(cfg):
        rows = Runner(cfg, out, ui).run(resume=resume, on_round=on_round)
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


@app.command()
def compare(
    scenario: str = typer.Option(..., "--scenario", help="packaged scenario (configs/scenarios/NAME.yaml) or a YAML path"),
    methods: str = typer.Option(..., "--methods", help="comma-separated variants METHOD[:key=value]..., e.g. "
                                "standalone,distill,distill+lada,distill+lada:filter=oracle; a key without a dot is "
                                "lada.KEY, a dotted key a full config path (distill:round.transfer.epochs=null)"),
    seeds: int = typer.Option(3, "--seeds", help="number of seeds N: runs seeds 0..N-1 of every method"),
    jobs: int = typer.Option(1, "--jobs", help="runs at a time, each its own process with cpu_count/J torch threads"),
    out: Optional[Path] = typer.Option(None, "--out", help="comparison directory (default: runs/compare-SCENARIO)"),
    set_: list[str] = typer.Option([], "--set", help="override for every run, e.g. --set rounds=2"),
    report_only: bool = typer.Option(False, "--report-only", help="run nothing; rebuild compare.md/.json/.png from finished runs"),
) -> None:
    """Run every method x seed (resumable: finished runs are reused), then write compare.md, compare.json
    and compare_accuracy.png: final client accuracy (own / global test), server accuracy, gain over
    round 0, bytes exchanged per round and wall time, mean ± std over seeds, and the testbed check
    (can this scenario judge a filter?). Runs live in OUT/VARIANT/seed-S/ (VARIANT: the method, or a
    slug of its spec: distill+lada:filter=oracle -> distill+lada_filter-oracle)."""
    import shlex

    from fedlada import compare as cmp
    from fedlada.methods import METHODS

    try:
        variants = list({v.label: v for v in (cmp.Variant.parse(m) for m in methods.split(",") if m.strip())}.values())
    except ConfigError as err:
        fail(str(err))
    names = [v.label for v in variants]
    unknown = list(dict.fromkeys(m for m in (cmp.spec_parts(n)[0] for n in names) if m not in METHODS))
    if not names or unknown:
        fail(f"--methods: unknown {', '.join(map(repr, unknown)) or 'empty list'}; choose from {', '.join(sorted(METHODS))}")
    if seeds < 1:
        fail(f"--seeds {seeds}: expected at least 1")
    if jobs < 1:
        fail(f"--jobs {jobs}: expected at least 1")
    out = out or Path("runs") / f"compare-{cmp.scenario_label(scenario)}"
    line = ["fedlada", "compare", "--scenario", scenario, "--methods", ",".join(names), "--seeds", str(seeds),
            "--jobs", str(jobs), "--out", str(out)] + [a for s in set_ for a in ("--set", s)]
    try:
        result = cmp.compare(scenario, variants, list(range(seeds)), n_jobs=jobs, out=out,
                             overrides=set_, command_line=shlex.join(line), report_only=report_only,
                             console=Console(stderr=True, log_path=False))
    except ConfigError as err:
        fail(str(err))
    grids = [(f"{result.data['scenario']}: final round, mean ± std over seeds", cmp.stats_grid(result.data["stats"]))]
    if result.data["lada_vs_host"]:
        grids.append(("LaDa minus its host, paired by seed (points)", cmp.paired_grid(result.data["lada_vs_host"])))
    for method, entry in result.data["oracle_gap"].items():
        grids.append((f"{method}: oracle gap recovered (%), per seed", cmp.oracle_gap_grid(entry)))
    for title, (header, body) in grids:
        table = Table(title=title)
        for i, h in enumerate(header):
            table.add_column(h, justify="left" if i == 0 else "right")
        for row in body:
            table.add_row(*row)
        console.print(table)
    for text in cmp.check_lines(result.data["check"]):
        console.print(text, highlight=False, markup=False)
    written = [p for p in (result.report, out / "compare.json", out / "compare_accuracy.png") if p.exists()]
    console.print(f"wrote {', '.join(map(str, written))}")
    if result.failed:
        console.print(f"[red]{len(result.failed)} run(s) failed:[/red] " + "; ".join(o.message for o in result.failed), highlight=False)
        raise typer.Exit(1)


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


if __name__ == "__main__":
    app()
