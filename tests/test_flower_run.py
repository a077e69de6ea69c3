"""Flower end to end: the simulation engine matches the in-process runner; a TLS deployment on 127.0.0.1."""

from __future__ import annotations

import json

import pytest
import yaml

pytest.importorskip("flwr", reason="the Flower tests need the flower extra (pip install -e '.[dev]')")

from flower_helpers import flower_processes, make_tls  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from fedlada.cli import app  # noqa: E402
from fedlada.config import config_from_dict  # noqa: E402
from fedlada.runner import Runner  # noqa: E402
from fedlada.report import read_rows  # noqa: E402


def _key(rows):
    """What must agree: accuracies and training losses (not timings, cache flags or float-formatted bytes)."""
    keep = lambda k: k in ("round", "participant", "split", "accuracy", "n") or k.startswith("loss/") and k != "loss/base"
    return [{k: v for k, v in r.items() if keep(k)} for r in rows]


def _flower(args, tmp_path, cfg_dict):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg_dict))
    before = set(flower_processes())
    result = CliRunner().invoke(app, ["flower", *args, str(path)], catch_exceptions=False)
    left = {pid: cmd for pid, cmd in flower_processes().items() if pid not in before}
    assert not left, f"processes left running: {left}"
    assert result.exit_code == 0, result.output
    return result


def test_simulation_matches_in_process_run(tiny_config_dict, tmp_path):
    out = tmp_path / "flower"
    _flower(["simulate", "--out", str(out)], tmp_path, tiny_config_dict)
    flower_rows = read_rows(out)
    local_rows = Runner(config_from_dict(tiny_config_dict), tmp_path / "in-process").run()
    assert sorted({r["round"] for r in flower_rows}) == [0, 1, 2]
    assert _key(flower_rows) == _key(local_rows)
    assert any(k.startswith("loss/") for r in flower_rows for k in r)  # the comparison saw training
    # The run directory is a normal one: report, config, server checkpoint; client state stayed on the nodes.
    assert (out / "report.md").exists() and (out / "config.yaml").exists()
    assert (out / "checkpoints" / "round-2" / "server").exists()
    assert json.loads((out / "flower-status.json").read_text())["status"] == "finished"
    for c in ("client-0", "client-1"):
        assert list((out / "nodes").glob(f"*/{c}/checkpoints/round-2/model"))
    r1 = [r for r in flower_rows if r["round"] == 1 and r["participant"] == "client-0"][0]
    assert r1["bytes_received"] > 0 and r1["bytes_sent"] > 0


@pytest.mark.slow  # every message starts a ClientApp process (torch imports): minutes on 2 CPUs
def test_local_deployment_with_tls_leaves_no_process(tiny_config_dict, tmp_path):
    cfg = tiny_config_dict
    cfg["data"]["client_domains"] = [["add"], ["mul"], ["sub"]]
    cfg["clients"].append({"model": {"name": "tiny-llama-xs"}, "base": cfg["clients"][0]["base"]})
    cfg["round"]["local"]["steps"] = 0  # fewer messages; the exchange still trains every client
    ca, cert, key = make_tls(tmp_path / "tls")
    out = tmp_path / "run"
    result = _flower(["local", "--out", str(out), "--ssl-ca-certfile", str(ca), "--ssl-certfile", str(cert),
                      "--ssl-keyfile", str(key)], tmp_path, cfg)
    assert "TLS" in result.output
    rows = read_rows(out)
    assert sorted({r["round"] for r in rows}) == [0, 1, 2]
    assert {r["participant"] for r in rows} == {"server", "client-0", "client-1", "client-2"}
    assert (out / "report.md").exists()
    for c in ("client-0", "client-1", "client-2"):
        assert list((out / "nodes").glob(f"*/{c}/current/model"))
