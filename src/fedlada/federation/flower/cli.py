"""`fedlada flower simulate|local`: the same run as `fedlada run`, through Flower.

Importing this module does not import Flower; each command checks for it first.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

flower_app = typer.Typer(help="Run the same federation through Flower (needs: pip install 'fedlada\\[flower]').",
                         no_args_is_help=True)

CONFIG_ARG = typer.Argument(None, help="YAML path or packaged config name (default: quickstart)")
SET_OPT = typer.Option([], "--set", help="override, e.g. --set method=distill+lada --set rounds=2")
OUT_OPT = typer.Option(None, "--out", help="run directory (default: runs/NAME-METHOD-seedSEED)")
RESUME_OPT = typer.Option(False, "--resume", help="continue the run in --out from its last checkpoint")


def _need_flower() -> None:
    try:
        import flwr  # noqa: F401
    except ImportError:
        from fedlada.cli_common import fail

        fail("Flower is not installed: pip install 'fedlada\\[flower]'")


def _run(mode: str, config, set_, out, resume, supernodes: int | None, tls, per_message: bool = False) -> None:
    from rich.markup import escape

    from fedlada.cli_common import accuracy_table, console, fail, one_line_errors, resolve_run
    from fedlada.config import ConfigError, dump_config
    from fedlada.federation.flower.launch import run_federation
    from fedlada.federation.fit import checked_data
    from fedlada.report import read_rows

    _need_flower()
    try:
        cfg, out = resolve_run(config, set_, out, resume)
    except ConfigError as err:
        fail(str(err))
    with one_line_errors(cfg):  # here, before any process starts or anything is written
        checked_data(cfg)
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    run_config = {"config-yaml": dump_config(cfg), "out": str(out), "resume": resume, "state-dir": str(out / "nodes")}
    console.print(f"flower {mode}: {out} method={cfg.method} seed={cfg.seed} rounds={cfg.rounds} clients={len(cfg.clients)}",
                  highlight=False)
    start = time.perf_counter()
    status = run_federation(mode, run_config, out, len(cfg.clients), tls=tls, supernodes=supernodes,
                            echo=lambda m: console.print(m, highlight=False, markup=False),
                            clientapp_per_message=per_message)
    if status.get("one_line"):  # a FedladaError of the ServerApp: the inputs or files, not a crash
        fail(escape(status["error"]))
    if status["status"] != "finished":
        if status.get("log_tail"):
            console.print(status["log_tail"], highlight=False, markup=False)
        fail(f"the Flower run did not finish: {status.get('error', status['status'])} (logs: {out / 'flower' / 'logs'})")
    console.print(accuracy_table(read_rows(out), f"accuracy (%) — {cfg.method}, seed {cfg.seed}, Flower {mode}"))
    console.print(f"finished in {time.perf_counter() - start:.0f} s; run directory {out} (report: {out / 'report.md'})")


@flower_app.command()
def simulate(
    config: Optional[str] = CONFIG_ARG,
    set_: list[str] = SET_OPT,
    out: Optional[Path] = OUT_OPT,
    resume: bool = RESUME_OPT,
    supernodes: Optional[int] = typer.Option(None, "--supernodes", help="virtual SuperNodes (default: one per client)"),
) -> None:
    """Flower's simulation engine (Ray) on this machine: one virtual SuperNode per client."""
    _run("simulate", config, set_, out, resume, supernodes, None)


@flower_app.command()
def local(
    config: Optional[str] = CONFIG_ARG,
    set_: list[str] = SET_OPT,
    out: Optional[Path] = OUT_OPT,
    resume: bool = RESUME_OPT,
    ca: Optional[Path] = typer.Option(None, "--ssl-ca-certfile", help="CA certificate (PEM); with the two below: TLS"),
    cert: Optional[Path] = typer.Option(None, "--ssl-certfile", help="SuperLink certificate for 127.0.0.1 (PEM)"),
    key: Optional[Path] = typer.Option(None, "--ssl-keyfile", help="SuperLink private key (PEM)"),
    per_message: bool = typer.Option(False, "--clientapp-per-message",
                                     help="Flower's default: a fresh ClientApp process per message (slow; "
                                          "otherwise one long-lived ClientApp process per SuperNode)"),
) -> None:
    """A SuperLink and one SuperNode per client as processes on 127.0.0.1; all stopped at the end."""
    from fedlada.cli_common import fail
    from fedlada.federation.flower.launch import TLS

    given = [p for p in (ca, cert, key) if p is not None]
    if given and len(given) != 3:
        fail("TLS needs all of --ssl-ca-certfile, --ssl-certfile and --ssl-keyfile")
    for p in given:
        if not p.exists():
            fail(f"{p}: no such file")
    tls = TLS(ca.resolve(), cert.resolve(), key.resolve()) if given else None
    if tls:
        from fedlada.errors import TLSError
        from fedlada.federation.flower.launch import check_tls

        _need_flower()  # brings cryptography
        try:
            check_tls(tls)
        except TLSError as err:
            fail(str(err))
    _run("local", config, set_, out, resume, None, tls, per_message)


@flower_app.command()
def clientapp(
    runtime_api_address: str = typer.Option("127.0.0.1:9094", "--runtime-api-address",
                                            help="the SuperNode's Runtime API (its --port)"),
    root_certificates: Optional[str] = typer.Option(None, "--root-certificates",
                                                    help="CA of the Runtime API's certificate (default: insecure)"),
    parent_pid: Optional[int] = typer.Option(None, "--parent-pid", help="exit when this process (the SuperNode) exits"),
) -> None:
    """A long-lived ClientApp process for a SuperNode started with --isolation process: keeps the
    client's model loaded between messages (Flower's default starts a process per message)."""
    _need_flower()
    from fedlada.federation.flower.worker import serve

    serve(runtime_api_address, insecure=root_certificates is None, root_certificates=root_certificates,
          parent_pid=parent_pid)
