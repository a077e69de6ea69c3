"""Bad inputs and broken files: each gives one clear error and writes nothing half; an interrupted
checkpoint write leaves the previous checkpoint usable."""

import json
import shutil

import pytest
import yaml
from conftest import Interrupt
from typer.testing import CliRunner

from fedlada.cli import app
from fedlada.config import config_from_dict
from fedlada.errors import CheckpointError, DataError, TLSError
from fedlada.federation.flower.launch import TLS, check_tls
from fedlada.federation.flower.node import Node, NodeSettings, Restore
from fedlada.federation.messages import Evaluate, LocalTrain, Prepare
from fedlada.federation.runner import Runner

cli = CliRunner()


def _key(rows):
    keep = lambda k: k in ("round", "participant", "split", "accuracy", "n") or k.startswith("loss/") and k != "loss/base"
    return [{k: v for k, v in r.items() if keep(k)} for r in rows]


def _one_error_line(res) -> str:
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, res.output
    return lines[0]


@pytest.fixture
def one_round_run(tiny_config_dict, tmp_path):
    tiny_config_dict["rounds"] = 1
    cfg = config_from_dict(tiny_config_dict)
    out = tmp_path / "done"
    Runner(cfg, out).run()
    return cfg, out


def _copy(out, name):
    dst = out.parent / name
    shutil.copytree(out, dst)
    return dst


def test_a_truncated_or_missing_safetensors_file_is_named_on_resume(one_round_run):
    cfg, out = one_round_run
    truncated = _copy(out, "truncated")
    weights = truncated / "checkpoints" / "round-1" / "client-0" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"client-0/model/model\.safetensors is damaged \(1000 of \d+ bytes\)"):
        Runner(cfg, truncated).run(resume=True)
    missing = _copy(out, "missing")
    (missing / "checkpoints" / "round-1" / "server" / "model" / "model.safetensors").unlink()
    line = _one_error_line(cli.invoke(app, ["run", "--out", str(missing), "--resume"]))
    assert "server/model/model.safetensors is missing" in line
    # a checkpoint written before the manifest: the load itself fails, and says which directory
    old = _copy(out, "old")
    state = old / "checkpoints" / "round-1" / "state.json"
    state.write_text(json.dumps({"round": 1}))
    weights = old / "checkpoints" / "round-1" / "client-1" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"client-1/model: the saved model is damaged or incomplete"):
        Runner(cfg, old).run(resume=True)


def test_a_checkpoint_from_another_config_is_refused_but_runtime_may_change(one_round_run):
    cfg, out = one_round_run
    other = _copy(out, "other")
    changed = cfg.model_copy(deep=True)
    changed.round.transfer.steps = 6
    (other / "config.yaml").write_text(yaml.safe_dump(changed.model_dump(mode="json", by_alias=True)))
    with pytest.raises(CheckpointError, match=r"written by a different config \(round.transfer.steps: 5 -> 6\)"):
        Runner(changed, other).run(resume=True)
    faster = cfg.model_copy(deep=True)
    faster.runtime.eval_batch_size = 32
    faster.rounds = 1
    rows = Runner(faster, _copy(out, "runtime")).run(resume=True)
    assert max(r["round"] for r in rows) == 1


def test_a_checkpoint_from_before_a_new_config_key_resumes(one_round_run):
    """A saved config without a key added since (here lada.anchor) is the same config: the key's default."""
    cfg, out = one_round_run
    older = _copy(out, "older")
    saved = yaml.safe_load((older / "config.yaml").read_text())
    del saved["lada"]["anchor"]
    (older / "config.yaml").write_text(yaml.safe_dump(saved))
    for ckpt in (older / "checkpoints").glob("round-*"):
        if (ckpt / "config.yaml").exists():  # as that older version wrote it, manifest included
            (ckpt / "config.yaml").write_text(yaml.safe_dump(saved))
            state = json.loads((ckpt / "state.json").read_text())
            state["files"]["config.yaml"] = (ckpt / "config.yaml").stat().st_size
            (ckpt / "state.json").write_text(json.dumps(state))
    again = cfg.model_copy(deep=True)
    again.rounds = 1
    assert max(r["round"] for r in Runner(again, older).run(resume=True)) == 1


def test_an_interrupted_checkpoint_write_leaves_the_previous_one_usable(tiny_config_dict, tmp_path):
    cfg = config_from_dict(tiny_config_dict)
    full = Runner(cfg, tmp_path / "full").run()
    out = tmp_path / "cut"
    runner = Runner(cfg, out)
    save_clients, calls = runner.channel.save_clients, []

    def crash_in_round_two(path, round_):  # dies after the server's weights and one client's are written
        calls.append(round_)
        if round_ == 2:
            runner.clients[0].save(path / "client-0")
            raise Interrupt
        save_clients(path, round_)

    runner.channel.save_clients = crash_in_round_two
    with pytest.raises(Interrupt):
        runner.run()
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["round-1", "round-2.tmp"] and not (out / "checkpoints" / "round-2.tmp" / "state.json").exists()
    resumed = Runner(cfg, out).run(resume=True)
    assert _key(resumed) == _key(full)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["round-2"]


def test_data_that_does_not_fit_gives_one_line_saying_what_to_change(tiny_config_dict, tmp_path):
    data = tmp_path / "gsm.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i}+1?", "answer": f"#### {i + 1}"}) + "\n" for i in range(50)))
    d = dict(tiny_config_dict)
    d["data"] = {"source": "gsm8k", "path": str(data), "domains": ["algebra"], "client_train": 10, "client_test": 5,
                 "public": 10, "server_corpus": 10, "global_test_per_domain": 5}
    with pytest.raises(DataError, match=r"data.domains: .* has no examples of domain 'algebra'"):
        Runner(config_from_dict(d), tmp_path / "r")
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(d))
    line = _one_error_line(cli.invoke(app, ["run", str(path), "--out", str(tmp_path / "domains")]))
    assert "has no examples of domain 'algebra'" in line and not (tmp_path / "domains" / "config.yaml").exists()
    # longer than the model's context: the generation asks for more tokens than the 512 positions hold
    path.write_text(yaml.safe_dump({**tiny_config_dict, "round": {**tiny_config_dict["round"], "max_new_tokens": 600}}))
    line = _one_error_line(cli.invoke(app, ["run", str(path), "--out", str(tmp_path / "long")]))
    assert "exceeds the model's 512 positions; lower round.max_new_tokens" in line
    assert not (tmp_path / "long" / "metrics.jsonl").exists() and not (tmp_path / "long" / "checkpoints").exists()


def test_a_node_state_directory_from_another_run_is_refused(tiny_config_dict, tmp_path):
    cfg = config_from_dict(tiny_config_dict)
    settings = NodeSettings(partition_id=0, num_partitions=2, state_dir=tmp_path / "nodes" / "run")
    node = Node(cfg, settings)
    node.handle(Prepare())
    node.handle(Evaluate(0))  # snapshots round 0
    root = settings.state_dir / "client-0"
    node.handle(LocalTrain(1, 3))
    before = (root / "checkpoints" / "round-0" / "model" / "model.safetensors").read_bytes()
    assert (root / "current" / "model" / "model.safetensors").read_bytes() != before
    node.handle(Restore(0, snapshot=1))  # a client that failed in round 1: back to round 0, saved as round 1
    assert (root / "current" / "model" / "model.safetensors").read_bytes() == before
    assert (root / "checkpoints" / "round-1" / "model" / "model.safetensors").read_bytes() == before
    other = cfg.model_copy(deep=True)
    other.round.transfer.steps = 9
    with pytest.raises(CheckpointError, match=r"client-0 holds the state of another run"):
        Node(other, settings).handle(Evaluate(1))
    faster = cfg.model_copy(deep=True)
    faster.runtime.eval_batch_size = 16  # runtime is not part of the run's identity
    Node(faster, settings).handle(Restore(1))


def test_tls_files_that_do_not_belong_together(tmp_path):
    from flower_helpers import make_tls

    ca, cert, key = make_tls(tmp_path / "a")
    ca_b, cert_b, key_b = make_tls(tmp_path / "b")
    check_tls(TLS(ca, cert, key))
    with pytest.raises(TLSError, match="was not signed by the CA"):
        check_tls(TLS(ca_b, cert, key))
    with pytest.raises(TLSError, match="is not the private key of"):
        check_tls(TLS(ca, cert, key_b))
    with pytest.raises(TLSError, match="does not name 10.0.0.1"):
        check_tls(TLS(ca, cert, key), host="10.0.0.1")
    with pytest.raises(TLSError, match="not a PEM private key"):
        check_tls(TLS(ca, cert, ca))
    line = _one_error_line(cli.invoke(app, ["flower", "local", "--out", str(tmp_path / "run"), "--ssl-ca-certfile", str(ca_b),
                                            "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]))
    assert "was not signed by the CA" in line and not (tmp_path / "run").exists()
