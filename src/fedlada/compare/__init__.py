"""Compare methods over seeds on one scenario: run every (method, seed) as its own `fedlada run`
process, J at a time, then aggregate the finished runs into compare.md, compare.json and a plot.

`planning` turns variant specs into jobs and run directories, `schedule` runs them, `results`
aggregates the finished runs (typed statistics), `testbed` says what the scenario can judge, and
`render` writes the comparison; `compare` here does all of it, with progress on the console.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from fedlada.compare.planning import (
    Job,
    Variant,
    available_scenarios,
    default_layout,
    finished_round,
    plan,
    resolve_scenario,
    scenario_label,
    spec_parts,
)
from fedlada.compare.render import check_lines, oracle_gap_grid, paired_grid, stats_grid, write_compare
from fedlada.compare.schedule import Outcome, default_threads, run_all, wall_seconds
from fedlada.config import ConfigError
from fedlada.report import read_rows, summary


@dataclass
class CompareResult:
    outcomes: list[Outcome] = field(default_factory=list)
    report: Optional[Path] = None
    data: dict = field(default_factory=dict)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def _final_line(job: Job) -> str:
    try:
        s = summary(read_rows(job.dir))
        return f"client own {100 * s['client_own']:.1f}%, global {100 * s['client_global']:.1f}%"
    except (FileNotFoundError, ValueError, KeyError):
        return ""


def compare(
    scenario: str, variants: list[Variant], seeds: list[int], *, n_jobs: int = 1, out: Optional[Path] = None,
    overrides: tuple[str, ...] | list[str] = (), command_line: str = "", report_only: bool = False, console=None,
    layout: Callable[[Path, Variant, int], Path] = default_layout,
) -> CompareResult:
    """Plan, run what is missing (with a progress bar on `console`), then write the comparison."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True, log_path=False)
    overrides = list(overrides)
    if n_jobs < 1:
        raise ConfigError(f"--jobs {n_jobs}: expected at least 1")
    scenario_path = resolve_scenario(scenario)
    out = out or Path("runs") / f"compare-{scenario_label(scenario)}"
    jobs = plan(scenario_path, variants, seeds, overrides, out, default_threads(n_jobs), layout)
    result = CompareResult()
    failed: dict[str, str] = {}
    if not report_only:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("runs", total=len(jobs))

            def on_outcome(o: Outcome) -> None:
                job = o.job
                if o.status == "reused":
                    progress.console.log(f"{job.name}: finished before, reused ({job.dir})")
                elif o.status == "done":
                    progress.console.log(f"{job.name}: done in {wall_seconds(job.dir):.0f} s; {_final_line(job)}")
                elif o.status == "busy":
                    progress.console.log(f"[yellow]{job.name}: in use by another run, left to it[/yellow] ({job.dir})")
                elif o.status == "failed":
                    failed[str(job.dir)] = o.message
                    progress.console.log(f"[red]{job.name}: FAILED[/red], {o.message}")
                progress.advance(task)

            def on_tick(running: list[Job]) -> None:
                now = ", ".join(f"{j.name} (round {max(finished_round(j.dir) + 1, 0)}/{j.cfg.rounds})" for j in running)
                progress.update(task, description=f"runs{': ' + now if now else ''}")

            result.outcomes = run_all(jobs, n_jobs, on_outcome=on_outcome, on_tick=on_tick)
    result.report, result.data = write_compare(
        out, jobs, scenario=scenario_label(scenario), scenario_path=scenario_path, seeds=seeds, overrides=overrides,
        command_line=command_line, failed=failed,
    )
    return result


__all__ = [
    "CompareResult",
    "Variant",
    "available_scenarios",
    "check_lines",
    "compare",
    "oracle_gap_grid",
    "paired_grid",
    "resolve_scenario",
    "scenario_label",
    "spec_parts",
    "stats_grid",
]
