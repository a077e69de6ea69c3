"""Start a SuperLink (and SuperNodes) as real processes, submit the fedlada app, stop them all.

Every process is started in a session of its own and stopped by its pid (its process group and
any descendant found under it), in a `finally`, so Ctrl-C or a failure leaves nothing behind.

`local` starts each SuperNode in Flower's `process` isolation mode with one long-lived fedlada
ClientApp worker next to it (`worker.py`), so that a client's model stays loaded between messages;
`--clientapp-per-message` keeps Flower's default (a fresh ClientApp process per message). While the
run goes on, the ServerApp's log lines (rounds, each client's answers) are echoed as they come.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

APP_DIR = Path(__file__).parent / "app"
CONNECTION = "fedlada"


@dataclass
class TLS:
    """PEM paths: the CA that signed the SuperLink's certificate, and that certificate with its key."""

    ca: Path
    cert: Path
    key: Path


def check_tls(tls: TLS, host: str = "127.0.0.1") -> None:
    """Raise TLSError (one line) unless the three files belong together: the key is the certificate's,
    the CA signed the certificate, it is valid now and names `host`. Otherwise the SuperLink would
    start and every SuperNode fail its handshake, seen only in their logs."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from fedlada.errors import TLSError

    def read(path: Path, what: str, loader):
        try:
            return loader(path.read_bytes())
        except (OSError, ValueError, TypeError) as err:
            raise TLSError(f"{path}: not a PEM {what} ({type(err).__name__})") from None

    ca = read(tls.ca, "certificate", x509.load_pem_x509_certificate)
    cert = read(tls.cert, "certificate", x509.load_pem_x509_certificate)
    key = read(tls.key, "private key", lambda b: serialization.load_pem_private_key(b, password=None))
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise TLSError(f"{tls.key} is not the private key of {tls.cert}; pass the key the certificate was made for")
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # ValueError (issuer name) or InvalidSignature
        raise TLSError(f"{tls.cert} was not signed by the CA in {tls.ca}; pass the CA that issued it") from None
    now = datetime.datetime.now(datetime.timezone.utc)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise TLSError(f"{tls.cert} is not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d} to "
                       f"{cert.not_valid_after_utc:%Y-%m-%d})")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = set()
    if host not in names:
        raise TLSError(f"{tls.cert} does not name {host} (subject alternative names: {sorted(names) or 'none'}); "
                       f"the SuperNodes connect to {host}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (read from /proc; empty where there is none)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is gone for our purposes
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


class Processes:
    """The processes this launch started; `stop()` ends them all by pid."""

    def __init__(self, log_dir: Path, env: dict[str, str]):
        self.log_dir, self.env = log_dir, env
        self.procs: list[tuple[str, subprocess.Popen]] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=self.env, start_new_session=True)
        log.close()
        self.procs.append((name, proc))
        return proc

    def check(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with code {proc.returncode}; log tail:\n{tail}")

    def pids(self) -> list[int]:
        """Our processes and everything below them, whether or not they left our process groups."""
        pids = []
        for _, proc in self.procs:
            pids += [proc.pid, *_descendants(proc.pid)]
        return pids

    def stop(self, grace: float = 10.0) -> None:
        pids = self.pids()
        groups = [proc.pid for _, proc in self.procs]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pgid in groups:
                try:
                    os.killpg(pgid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                for _, proc in self.procs:
                    proc.poll()  # reap
                if not any(_alive(p) for p in pids):
                    return
                time.sleep(0.1)


def flower_env(flwr_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)  # flower-superexec must be on PATH for the SuperNodes
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.update({"FLWR_HOME": str(flwr_home), "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
                "PYTHONUNBUFFERED": "1", "RAY_DEDUP_LOGS": "0",
                "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1"})  # default 1 s, paid once per message
    return env


def write_connection(flwr_home: Path, address: str, tls: TLS | None) -> None:
    """`$FLWR_HOME/config.toml` with one SuperLink connection, the default."""
    lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]", f'address = "{address}"']
    lines.append(f"root-certificates = {_toml_string(str(tls.ca))}" if tls else "insecure = true")
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text("\n".join(lines) + "\n")


def wait_port(port: int, procs: Processes, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def _toml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid TOML basic string


def write_run_config(path: Path, values: dict) -> Path:
    lines = []
    for k, v in values.items():
        lines.append(f"{k} = {str(v).lower() if isinstance(v, bool) else _toml_string(v) if isinstance(v, str) else v}")
    path.write_text("\n".join(lines) + "\n")
    return path


def superlink_argv(port: int, tls: TLS | None, simulation: bool, log_dir: Path) -> list[str]:
    argv = ["flower-superlink", "--host", "127.0.0.1", "--port", str(port),
            "--control-api-address", f"127.0.0.1:{free_port()}",
            "--disable-runtime-dependency-installation"]
    if simulation:
        argv += ["--simulation"]
    if tls:
        argv += ["--ssl-ca-certfile", str(tls.ca), "--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key)]
    else:
        argv += ["--insecure"]
    return argv


def supernode_argv(link_port: int, port: int, node_config: dict, tls: TLS | None, isolation: str = "subprocess") -> list[str]:
    nc = " ".join(f"{k}={_toml_string(v) if isinstance(v, str) else v}" for k, v in node_config.items())
    argv = [sys.executable, "-m", "fedlada.federation.flower.supernode", "--superlink", f"127.0.0.1:{link_port}",
            "--port", str(port), "--node-config", nc, "--isolation", isolation]
    argv += ["--root-certificates", str(tls.ca)] if tls else ["--insecure"]
    return argv


def worker_argv(port: int, supernode_pid: int) -> list[str]:
    """fedlada's long-lived ClientApp process for the SuperNode whose Runtime API is on `port`."""
    return [sys.executable, "-m", "fedlada.federation.flower.worker", "--runtime-api-address", f"127.0.0.1:{port}",
            "--parent-pid", str(supernode_pid)]


SERVER_LINE = re.compile(r"^\d\d:\d\d:\d\d ")  # a line of the ServerApp's LogUI (apps.py)


class LogFollower:
    """Echoes the lines of a growing log file that match `pattern` (the ServerApp's, from `flwr run --stream`)."""

    def __init__(self, path: Path, echo, pattern=SERVER_LINE):
        # From the end of what is there already (the logs of an earlier run in the same directory).
        self.path, self.echo, self.pattern, self.rest = path, echo, pattern, ""
        self.pos = path.stat().st_size if path.exists() else 0

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except OSError:
            return
        self.pos += len(data)
        *lines, self.rest = (self.rest + data.decode(errors="replace")).split("\n")
        for line in lines:
            line = line.rstrip("\r")
            if self.pattern.match(line):
                self.echo(line)


class ServerAppGone(RuntimeError):
    """The ServerApp process ended without writing `finished` or `failed` (it was killed)."""


def is_program(pid: int, name: str) -> bool:
    """Whether process `pid` runs the program `name` (its argv[0], or argv[1] under an interpreter)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2]
    except OSError:
        return False
    return any(Path(a.decode(errors="replace")).name == name for a in argv)


class ServerAppWatch:
    """Notices a ServerApp process (below the SuperLink) that ends while the run's status still says
    `running`: killed, it wrote nothing, and Flower would notice only when its heartbeats run out
    (a minute or more). Call `check()` now and then."""

    def __init__(self, superlink_pid: int, out: Path, grace: float = 3.0):
        self.superlink_pid, self.out, self.grace = superlink_pid, out, grace
        self.seen: set[int] = set()
        self.gone_since: float | None = None

    def check(self) -> None:
        below = _descendants(self.superlink_pid)
        self.seen |= {pid for pid in below if is_program(pid, "flwr-serverapp")}
        if not self.seen or any(_alive(pid) for pid in self.seen):
            self.gone_since = None
            return
        self.gone_since = self.gone_since or time.monotonic()
        if time.monotonic() - self.gone_since > self.grace and read_status(self.out)["status"] == "running":
            raise ServerAppGone("the ServerApp process ended without finishing (killed?)")


def submit(procs: Processes, run_config: dict, work: Path, federation_options: list[str] | None = None,
           echo=None, watch=None) -> int:
    """`flwr run APP_DIR fedlada --stream`: returns its exit code once the run has ended; with `echo`,
    the ServerApp's log lines are passed to it as they arrive; `watch()` is called every half second
    (it may raise to end the run). Raises RuntimeError when the SuperLink dies meanwhile."""
    app = work / "app"  # a copy, so that building the FAB never writes into the installed package
    shutil.rmtree(app, ignore_errors=True)
    shutil.copytree(APP_DIR, app)
    argv = ["flwr", "run", str(app), CONNECTION, "--stream", "--run-config", str(write_run_config(work / "run-config.toml", run_config))]
    for opt in federation_options or []:
        argv += ["--federation-config", opt]
    follow = LogFollower(procs.log_dir / "flwr-run.log", echo) if echo else None
    proc = procs.start("flwr-run", argv)
    while proc.poll() is None:
        if follow:
            follow.poll()
        superlink = next((p for n, p in procs.procs if n == "superlink"), None)
        if superlink is not None and superlink.poll() is not None:
            raise RuntimeError(f"the SuperLink exited with code {superlink.returncode} during the run")
        if watch:
            watch()
        time.sleep(0.5)
    if follow:
        follow.poll()
    return proc.returncode


def last_checkpoint(out: Path) -> int | None:
    """The last round with a complete checkpoint in `out` (one holding its state.json), or None."""
    rounds = [int(p.name.split("-", 1)[1]) for p in (out / "checkpoints").glob("round-*")
              if p.name.split("-", 1)[1].isdigit() and (p / "state.json").exists()]
    return max(rounds, default=None)


def read_status(out: Path) -> dict:
    from fedlada.federation.flower.apps import STATUS

    path = out / STATUS
    return json.loads(path.read_text()) if path.exists() else {"status": "missing"}


def run_federation(
    mode: str, run_config: dict, out: Path, num_clients: int, *, tls: TLS | None = None,
    supernodes: int | None = None, work: Path | None = None, echo=print, clientapp_per_message: bool = False,
    progress: bool = True,
) -> dict:
    """Run the fedlada app on a SuperLink started here: `simulate` (Ray) or `local` (SuperNodes).

    `local`: each SuperNode in `process` isolation with a long-lived fedlada ClientApp worker
    (`clientapp_per_message`: Flower's default, a ClientApp process per message). `progress`: echo the
    ServerApp's log lines while it runs.

    Returns the ServerApp's status (`finished`, or `failed` with the error). Every process
    started here is stopped before returning, also on failure or Ctrl-C.
    """
    work = Path(work or out / "flower")
    work.mkdir(parents=True, exist_ok=True)
    flwr_home = work / "flwr-home"
    procs = Processes(work / "logs", flower_env(flwr_home))
    link_port = free_port()
    (out / "flower-status.json").unlink(missing_ok=True)
    old_sigterm = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread
        old_sigterm = None
    try:
        write_connection(flwr_home, f"127.0.0.1:{link_port}", tls)
        superlink = procs.start("superlink", superlink_argv(link_port, tls, mode == "simulate", work))
        wait_port(link_port, procs)
        echo(f"SuperLink on 127.0.0.1:{link_port} ({'TLS' if tls else 'insecure'}); logs in {procs.log_dir}")
        if mode == "local":
            isolation = "subprocess" if clientapp_per_message else "process"
            for k in range(supernodes or num_clients):
                node_config = {"partition-id": k, "num-partitions": num_clients, "state-dir": str(out / "nodes"),
                               "compute-lock": str(out / "nodes" / "compute.lock")}  # apps.one_node_at_a_time
                port = free_port()
                node = procs.start(f"supernode-{k}", supernode_argv(link_port, port, node_config, tls, isolation))
                if isolation == "process":
                    procs.start(f"clientapp-{k}", worker_argv(port, node.pid))
            echo(f"{supernodes or num_clients} SuperNodes started (state in {out / 'nodes'}; "
                 + ("a ClientApp process per message)" if clientapp_per_message else "one long-lived ClientApp process each)"))
        federation = [f"num-supernodes={supernodes or num_clients}"] if mode == "simulate" else None
        try:
            code = submit(procs, run_config, work, federation, echo=echo if progress else None,
                          watch=ServerAppWatch(superlink.pid, out).check)
        except ServerAppGone as err:
            done = last_checkpoint(out)
            return {"status": "failed", "one_line": True,
                    "error": f"{err}; " + (f"`--resume` with the same --out continues after round {done}" if done is not None
                                           else "no round was checkpointed yet: run it again")}
        status = read_status(out)
        if status["status"] != "finished":
            log = (procs.log_dir / "flwr-run.log").read_text(errors="replace")[-3000:]
            status.setdefault("error", f"flwr run exited with code {code}")
            status["log_tail"] = log
        return status
    finally:
        procs.stop()
        if old_sigterm is not None:
            signal.signal(signal.SIGTERM, old_sigterm)
