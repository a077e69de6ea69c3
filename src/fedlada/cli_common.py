"""What the `fedlada` commands share (`fedlada run`, `compare`, `report`, `data` and `flower`): the
console, errors as one line, the accuracy table, and a run's config and directory."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from fedlada.config import ConfigError, RunConfig, config_from_dict, load_config
from fedlada.errors import FedladaError

console = Console(width=None if sys.stdout.isatty() else 140)  # tables stay readable when piped to a log


def fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)  # one line, never wrapped
    raise typer.Exit(2)


@contextmanager
def one_line_errors(cfg: RunConfig):
    """A run's errors the user can act on, printed as they must be read: a data file's bad lines, then
    one line; any `FedladaError` as one line (exit code 2). Anything else is a bug and keeps its traceback."""
    from rich.markup import escape

    from fedlada.data.files import DataFileError

    try:
        yield
    except DataFileError as err:
        for line in err.report.lines():
            console.print(line, highlight=False)
        fail(f"{cfg.data.path}: {len(err.report.errors)} bad line(s); nothing was trained")
    except FedladaError as err:  # the last checkpoint stays usable
        fail(escape(str(err)))


WIDE_TABLE = 9  # columns (round + participant/split pairs) beyond which the table is printed transposed


def accuracy_table(rows: list[dict], title: str) -> Table:
    """Rounds down, participants across; with many clients (a column per participant and split would
    not fit a terminal) participants down and rounds across."""
    from fedlada.report import accuracy_grid

    header, body = accuracy_grid(rows)
    table = Table(title=title)
    if len(header) > WIDE_TABLE:
        columns = list(zip(*body))  # columns[0]: the rounds; columns[j]: header[j]'s accuracies
        body = [[name, *columns[j]] for j, name in enumerate(header[1:], start=1)]
        header = ["participant (test)"] + [f"round {t}" for t in columns[0]]
    for h in header:
        table.add_column(h.replace(" (", "\n("), justify="right")
    for row in body:
        table.add_row(*row)
    return table


def resolve_run(config: Optional[str], overrides: list[str], out: Optional[Path], resume: bool) -> tuple[RunConfig, Path]:
    """The run's config (checked against its method) and directory; with `resume`, the saved config, with
    the --set overrides applied to it when no CONFIG is given; where they could change the results
    (`fedlada.methods.results_difference`: not `rounds`, `runtime`, nor keys the method never reads), refused.
    So `--resume --set rounds=5` extends a finished three-round run."""
    import yaml

    from fedlada.methods import check, results_difference  # the hosts and models: only once a run is asked for

    cfg = check(load_config(config, overrides))
    out = out or Path("runs") / f"{cfg.name}-{cfg.method}-seed{cfg.seed}"
    saved_path = out / "config.yaml"
    if resume and saved_path.exists():
        try:
            saved = check(config_from_dict(yaml.safe_load(saved_path.read_text()) or {}))
        except (ConfigError, yaml.YAMLError) as err:
            raise ConfigError(f"--resume: {saved_path} is not a valid config ({str(err).splitlines()[0]})") from None
        if not config:
            cfg = check(load_config(str(saved_path), overrides))
        diff = results_difference(saved, cfg)
        if diff:
            raise ConfigError(f"--resume: the given config differs from {saved_path} ({diff}); drop CONFIG/--set "
                              "to resume it as saved")
    elif not resume and (out / "metrics.jsonl").exists():
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it or --out for a new directory")
    return cfg, out
