"""Faults under a real Flower deployment on 127.0.0.1 (`fedlada flower local`, 3 SuperNodes as processes).

A SuperNode killed during round 1 under `runtime.on_client_failure=skip`: the run still finishes.
The ServerApp killed after round 1: `fedlada flower local --resume` ends with the same metrics as an
uninterrupted run. No process is left behind in either case. Minutes on 2 CPUs: marked slow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("flwr", reason="the Flower tests need the flower extra (pip install -e '.[dev]')")

from flower_helpers import flower_processes, launched_under  # noqa: E402

from fedlada.config import config_from_dict  # noqa: E402
from fedlada.federation.flower.launch import _descendants, is_program  # noqa: E402
from fedlada.runner import Runner  # noqa: E402
from fedlada.report import read_rows  # noqa: E402

FEDLADA = str(Path(sys.executable).with_name("fedlada"))
pytestmark = pytest.mark.slow


def _key(rows):
    keep = lambda k: k in ("round", "participant", "split", "accuracy", "n") or k.startswith("loss/") and k != "loss/base"
    return [{k: v for k, v in r.items() if keep(k)} for r in rows]


def _three_clients(cfg):
    cfg["data"]["client_domains"] = [["add"], ["mul"], ["sub"]]
    cfg["clients"].append({"model": {"name": "tiny-llama-xs"}, "base": cfg["clients"][0]["base"]})
    return cfg


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _stop_what_was_started():
    """A failing test still stops its `fedlada flower local` (SIGTERM: it stops everything it started)."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _start(tmp_path, cfg, out, *extra):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log = open(tmp_path / f"fedlada-{len(list(tmp_path.glob('fedlada-*.log')))}.log", "w+")
    proc = subprocess.Popen([FEDLADA, "flower", "local", str(path), "--out", str(out), *extra], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    _STARTED.append(proc)
    return proc, log


def _output(log) -> str:
    log.flush()
    log.seek(0)
    return log.read()


def _wait_for(what, condition, proc, log, timeout=600.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"fedlada flower local ended (code {proc.returncode}) before {what}:\n{_output(log)[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout:.0f} s:\n{_output(log)[-3000:]}")
        time.sleep(0.2)


def _below(pid: int, *words: str) -> list[int]:
    found = []
    for child in _descendants(pid):
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if all(w in cmd for w in words):
            found.append(child)
    return found


def _finish(proc, log, timeout=900.0) -> str:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"fedlada flower local did not end within {timeout:.0f} s:\n{_output(log)[-3000:]}")
    return _output(log)


def _left(before: set[int], tmp_path: Path) -> dict[int, str]:
    """Flower and fedlada processes this test started that still run (not another run's on the machine)."""
    return {pid: cmd for pid, cmd in flower_processes().items() if pid not in before and launched_under(pid, tmp_path)}


def _checkpointed(out: Path, round_: int):
    return lambda: (out / "checkpoints" / f"round-{round_}" / "state.json").exists()


def test_a_supernode_killed_during_round_1_is_skipped_and_the_run_finishes(tiny_config_dict, tmp_path):
    cfg = _three_clients(tiny_config_dict)
    cfg["runtime"].update(on_client_failure="skip", client_timeout=20)
    out = tmp_path / "run"
    before = set(flower_processes())
    proc, log = _start(tmp_path, cfg, out)
    _wait_for("round-0 checkpoint", _checkpointed(out, 0), proc, log)
    node = _below(proc.pid, "fedlada.federation.flower.supernode", "partition-id=1 ")
    assert len(node) == 1, node
    os.kill(node[0], signal.SIGKILL)  # client-1's SuperNode dies as round 1 starts; its ClientApp worker follows it
    text = _finish(proc, log)
    left = _left(before, tmp_path)
    assert not left, f"processes left running: {left}"
    assert proc.returncode == 0, text[-3000:]
    rows = read_rows(out)
    assert sorted({r["round"] for r in rows}) == [0, 1, 2]
    server1 = {k: v for r in rows if r["round"] == 1 and r["participant"] == "server" for k, v in r.items()}
    assert "no reply from node" in server1.get("failed/client-1", ""), server1
    for t in (1, 2):  # client-1 is left out (it stays dead); the other two go on
        assert {r["participant"] for r in rows if r["round"] == t} == {"server", "client-0", "client-2"}
    assert json.loads((out / "flower-status.json").read_text())["status"] == "finished"
    # Round progress was on the terminal while it ran, not only in the log files.
    assert "round 1: " in text and "client-0: Evaluate answered in" in text


def test_the_server_side_killed_after_round_1_resumes_to_the_metrics_of_an_uninterrupted_run(tiny_config_dict, tmp_path):
    cfg = _three_clients(tiny_config_dict)
    cfg["rounds"] = 3
    out = tmp_path / "run"
    states = [out / "nodes" / "run" / f"client-{k}" / "current" / "stamp.json" for k in range(3)]

    def a_node_is_in_round_2() -> bool:
        if not _checkpointed(out, 1)():
            return False
        for s in states:
            try:
                stamp = json.loads(s.read_text())
            except (OSError, ValueError):
                continue
            if stamp.get("round") == 1 and not stamp.get("clean"):
                return True
        return False

    before = set(flower_processes())
    proc, log = _start(tmp_path, cfg, out)
    _wait_for("a node working on round 2 after the round-1 checkpoint", a_node_is_in_round_2, proc, log)
    server = [pid for pid in _descendants(proc.pid) if is_program(pid, "flwr-serverapp")]
    assert len(server) == 1, server
    os.kill(server[0], signal.SIGKILL)  # no status written, nothing cleaned up by the ServerApp itself
    killed = time.monotonic()
    text = _finish(proc, log, timeout=300)
    noticed = time.monotonic() - killed
    print(f"ServerApp killed: fedlada flower local ended {noticed:.1f} s later")
    assert proc.returncode == 2, text[-3000:]
    assert noticed < 45, noticed  # not Flower's heartbeat timeout (a minute or more)
    assert "the ServerApp process ended without finishing" in text and "continues after round 1" in text, text[-2000:]
    assert not _left(before, tmp_path), "processes left after the kill"
    assert max(r["round"] for r in read_rows(out)) >= 1

    proc, log = _start(tmp_path, cfg, out, "--resume")
    text = _finish(proc, log)
    left = _left(before, tmp_path)
    assert not left, f"processes left running: {left}"
    assert proc.returncode == 0, text[-3000:]
    assert "resuming after round 1" in text
    assert "round 0: " not in text and "round 3: " in text  # its own progress only, not the killed run's again
    # The node that had gone on into round 2 was put back to its round-1 snapshot, not mixed in.
    node_logs = "".join(p.read_text(errors="replace") for p in (out / "flower" / "logs").glob("clientapp-*.log"))
    assert "the checkpoint is round 1: reloaded from its round 1 snapshot" in node_logs
    reference = Runner(config_from_dict(cfg), tmp_path / "uninterrupted").run()
    resumed = read_rows(out)
    assert sorted({r["round"] for r in resumed}) == [0, 1, 2, 3]
    assert _key(resumed) == _key(reference)
