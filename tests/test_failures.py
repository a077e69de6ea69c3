"""Failing clients: `runtime.on_client_failure=skip` leaves a client out of one round and brings it back
from its last checkpoint; `fail` stops the run with one clear error."""

import json

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file
from typer.testing import CliRunner

from fedlada.cli import app
from fedlada.config import config_from_dict
from fedlada.errors import ClientFailure
from fedlada.federation.participants import Client
from fedlada.runner import Runner
from fedlada.hosts.fedcollm import FedCoLLM, SendWeights


@pytest.fixture
def fail_client_one_in_round_one(monkeypatch):
    """client-1's local step of round 1 trains (the model changes), then raises: a half-trained model."""
    original = Client.local_train

    def local_train(self, round_, cfg):
        stats = original(self, round_, cfg)
        if self.name == "client-1" and round_ == 1:
            raise RuntimeError("injected failure\nsecond line of the message")
        return stats

    monkeypatch.setattr(Client, "local_train", local_train)


def _weights(out, round_, name):
    return load_file(out / "checkpoints" / f"round-{round_}" / name / "model" / "model.safetensors")


def test_skip_leaves_the_client_out_of_one_round_and_brings_it_back(tiny_config_dict, tmp_path, fail_client_one_in_round_one):
    tiny_config_dict["runtime"]["on_client_failure"] = "skip"
    out = tmp_path / "run"
    saved = {}

    def on_round(t, rows):  # the checkpoint of round t is written when this is called
        saved[t] = _weights(out, t, "client-1")

    rows = Runner(config_from_dict(tiny_config_dict), out).run(on_round=on_round)
    by = {(r["round"], r["participant"], r["split"]): r for r in rows}
    assert by[1, "server", "global_test"]["failed/client-1"] == "LocalTrain: RuntimeError: injected failure"
    assert (1, "client-1", "local_test") not in by and (1, "client-0", "local_test") in by  # missing, not crashed
    assert "failed/client-1" not in by[2, "server", "global_test"]
    assert {(2, "client-1", "local_test"), (2, "client-1", "global_test")} <= by.keys()  # back, and evaluated
    assert "seconds/local" in by[2, "client-1", "local_test"]
    # the half-trained model was dropped: client-1 ends round 1 with its round-0 weights, then trains again
    assert all(np.array_equal(saved[1][k], saved[0][k]) for k in saved[0])
    assert not all(np.array_equal(saved[2][k], saved[0][k]) for k in saved[0])
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("failed/client-1") for r in lines if r["round"] == 1)


def test_fail_stops_with_one_error_naming_client_round_and_message(tiny_config_dict, tmp_path, fail_client_one_in_round_one):
    with pytest.raises(ClientFailure, match=r"^client-1 failed in round 1 on LocalTrain: RuntimeError: injected failure "):
        Runner(config_from_dict(tiny_config_dict), tmp_path / "run").run()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict))
    res = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "cli")])
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and "Traceback" not in res.output
    assert lines[0].startswith("error: client-1 failed in round 1 on LocalTrain: RuntimeError: injected failure")
    assert (tmp_path / "cli" / "checkpoints" / "round-0" / "state.json").exists()  # --resume can continue


def test_fedcollm_averages_over_the_clients_that_answered(tiny_config_dict, tmp_path, monkeypatch):
    tiny_config_dict.update(method="fedcollm", rounds=1)
    tiny_config_dict["runtime"]["on_client_failure"] = "skip"
    tiny_config_dict["clients"] = [{"model": {"name": "tiny-llama-xs", "init_group": "slm"},
                                    "base": tiny_config_dict["clients"][0]["base"]}] * 2
    original = FedCoLLM.client_handlers[SendWeights]

    def send_weights(client, msg):
        if client.name == "client-0":
            raise OSError("disk gone")
        return original(client, msg)

    monkeypatch.setitem(FedCoLLM.client_handlers, SendWeights, send_weights)  # the runner registers the host's
    rows = Runner(config_from_dict(tiny_config_dict), tmp_path / "run").run()
    server = [r for r in rows if r["round"] == 1 and r["participant"] == "server"][0]
    assert server["fedcollm/averaged"] == 1.0 and server["failed/client-0"] == "SendWeights: OSError: disk gone"
    assert {r["participant"] for r in rows if r["round"] == 1} == {"server", "client-1"}


def test_a_failure_in_round_zero_stops_even_under_skip(tiny_config_dict, tmp_path, monkeypatch):
    tiny_config_dict["runtime"]["on_client_failure"] = "skip"

    def prepare(self):
        raise RuntimeError("no memory")

    monkeypatch.setattr(Client, "prepare", prepare)
    with pytest.raises(ClientFailure, match="round 0 on Prepare: RuntimeError: no memory; a client cannot be skipped"):
        Runner(config_from_dict(tiny_config_dict), tmp_path / "run").run()


class _ErrorReply:
    def has_error(self):
        return True

    class error:
        reason = "Traceback (most recent call last):\n  ...\nRuntimeError: out of memory"


def test_flower_channel_timeouts_and_error_replies_are_client_failures(tiny_config_dict, monkeypatch):
    pytest.importorskip("flwr")
    from flwr.supercore.task_identity import TaskIdentity
    from flower_helpers import StandInGrid

    for attr in ("_run_id", "_node_id", "_task_id"):  # what a ServerApp has set when it makes messages
        monkeypatch.setattr(TaskIdentity, attr, 1)
    from fedlada.federation.flower.apps import FlowerChannel
    from fedlada.federation.flower.node import Restore
    from fedlada.federation.flower.records import from_record
    from fedlada.federation.messages import Evaluate, LocalTrain
    from fedlada.hosts import RoundContext
    from fedlada.progress import UI

    tiny_config_dict["runtime"].update(on_client_failure="skip", client_timeout=0.2)
    cfg = config_from_dict(tiny_config_dict)
    silent = FlowerChannel(StandInGrid(lambda msg: None), [11, 12], ["client-0", "client-1"], timeout=cfg.runtime.client_timeout)
    ctx = RoundContext(1, cfg, None, silent, UI())
    assert ctx.call(1, LocalTrain(1, 5)) is None and ctx.call(1, Evaluate(1)) is None
    assert len(silent.grid.pushed) == 1  # nothing more is sent to a failed client in the round
    assert ctx.failed[1].reason == "no reply from node 12 within runtime.client_timeout=0.2 s"
    failing = FlowerChannel(StandInGrid(lambda msg: _ErrorReply()), [11, 12], ["client-0", "client-1"])
    ctx = RoundContext(1, cfg, None, failing, UI())
    assert ctx.call(0, LocalTrain(1, 5)) is None
    assert str(ctx.failed[0]) == "client-0 on LocalTrain: node 11: RuntimeError: out of memory"
    failing.restore_client(0, None, 0)  # unreachable: logged, not raised
    assert from_record(failing.grid.pushed[-1].content) == Restore(0, snapshot=1)
