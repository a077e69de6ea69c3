"""Bad inputs and broken files: each gives one clear error and writes nothing half; an interrupted
checkpoint write leaves the previous checkpoint usable."""

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import Interrupt
from typer.testing import CliRunner

from fedlada.cli import app
from fedlada.config import config_from_dict
from fedlada.errors import CheckpointError, TLSError
from fedlada.federation.flower.launch import TLS, check_tls
from fedlada.federation.flower.node import Node, NodeSettings, Restore
from fedlada.federation.messages import Evaluate, LocalTrain, Prepare
from fedlada.runner import Runner

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


def _files(root):
    """Every file under a directory with its bytes: what a refused run must leave as it was."""
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()}


def _gsm8k(path, n, steps=1):
    """A GSM8K-format file (question, answer ending `#### N`); `steps` lines of working per answer."""
    lines = []
    for i in range(n):
        work = "".join(f"Step {k}: {i} + {k} = {i + k}.\n" for k in range(1, steps + 1))
        lines.append(json.dumps({"question": f"Tom has {i} apples and buys {steps} more. How many?",
                                 "answer": f"{work}#### {i + steps}"}) + "\n")
    path.write_text("".join(lines))
    return path


def test_a_truncated_or_missing_safetensors_file_is_named_on_resume(one_round_run):
    cfg, out = one_round_run
    truncated = _copy(out, "truncated")
    weights = truncated / "checkpoints" / "round-1" / "client-0" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    before = _files(truncated)
    line = _one_error_line(cli.invoke(app, ["run", "--out", str(truncated), "--resume"]))
    assert re.search(r"client-0/model/model\.safetensors is damaged \(1000 of \d+ bytes\); delete .* to start afresh", line)
    assert _files(truncated) == before  # metrics, config and checkpoint as they were
    missing = _copy(out, "missing")
    (missing / "checkpoints" / "round-1" / "server" / "model" / "model.safetensors").unlink()
    before = _files(missing)
    line = _one_error_line(cli.invoke(app, ["run", "--out", str(missing), "--resume"]))
    assert "server/model/model.safetensors is missing" in line and _files(missing) == before
    # a checkpoint written before the manifest: the load itself fails, and says which directory
    old = _copy(out, "old")
    state = old / "checkpoints" / "round-1" / "state.json"
    state.write_text(json.dumps({"round": 1}))
    weights = old / "checkpoints" / "round-1" / "client-1" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"client-1/model: the saved model is damaged or incomplete"):
        Runner(cfg, old).run(resume=True)


def test_a_checkpoint_from_another_config_is_refused_but_runtime_and_unread_keys_may_change(one_round_run):
    cfg, out = one_round_run
    other = _copy(out, "other")
    changed = cfg.model_copy(deep=True)
    changed.round.transfer.steps = 6
    (other / "config.yaml").write_text(yaml.safe_dump(changed.model_dump(mode="json", by_alias=True)))
    with pytest.raises(CheckpointError, match=r"written by a different config \(round.transfer.steps: 5 -> 6\)"):
        Runner(changed, other).run(resume=True)
    # the command line: resuming with a changed config is refused before anything is loaded or written
    before = _files(out)
    line = _one_error_line(cli.invoke(app, ["run", str(out / "config.yaml"), "--out", str(out), "--resume",
                                            "--set", "round.transfer.steps=6"]))
    assert "the given config differs" in line and "(round.transfer.steps: 5 -> 6); drop CONFIG/--set" in line
    assert _files(out) == before
    # neither may a key the method never reads: distill has no LaDa and never trains the server
    faster = cfg.model_copy(deep=True)
    faster.runtime.eval_batch_size = 32
    faster.lada.reward = "nll_drop" if cfg.lada.reward != "nll_drop" else "heldout"
    faster.server.transfer_lr = 1e-5
    faster.rounds = 1
    rows = Runner(faster, _copy(out, "runtime")).run(resume=True)
    assert max(r["round"] for r in rows) == 1


def test_a_finished_run_is_extended_by_rounds_to_the_numbers_of_a_longer_run_and_never_cut(one_round_run, tiny_config_dict):
    """`rounds` only bounds the loop: `--resume --set rounds=2` on a finished one-round run continues it (the
    saved config with the override) and ends where a two-round run ends; a checkpoint past `rounds` is refused."""
    cfg, out = one_round_run
    longer = _copy(out, "longer")
    res = cli.invoke(app, ["run", "--out", str(longer), "--resume", "--set", "rounds=2", "--set", "runtime.threads=1"])
    assert res.exit_code == 0, res.output
    assert yaml.safe_load((longer / "config.yaml").read_text())["rounds"] == 2
    full = Runner(config_from_dict({**tiny_config_dict, "rounds": 2}), out.parent / "full").run()
    assert _key([json.loads(line) for line in (longer / "metrics.jsonl").read_text().splitlines()]) == _key(full)
    shorter = cfg.model_copy(deep=True)
    shorter.rounds = 0
    before = _files(out)
    with pytest.raises(CheckpointError, match=r"is of round 1, past rounds=0: a run can be extended by --resume, not cut"):
        Runner(shorter, out).run(resume=True)
    assert _files(out) == before


def _rewrite_saved_config(run: Path, edit) -> None:
    """The run's saved config as `edit` changes it, in the run directory and in its checkpoints (as an
    older or newer version would have written it, manifest included)."""
    saved = yaml.safe_load((run / "config.yaml").read_text())
    edit(saved)
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    for ckpt in (run / "checkpoints").glob("round-*"):
        if (ckpt / "config.yaml").exists():
            (ckpt / "config.yaml").write_text(yaml.safe_dump(saved))
            state = json.loads((ckpt / "state.json").read_text())
            state["files"]["config.yaml"] = (ckpt / "config.yaml").stat().st_size
            (ckpt / "state.json").write_text(json.dumps(state))


def test_a_checkpoint_from_before_a_new_config_key_resumes(one_round_run):
    """A saved config without a key added since (here lada.anchor) is the same config: the key's default."""
    cfg, out = one_round_run
    older = _copy(out, "older")
    _rewrite_saved_config(older, lambda saved: saved["lada"].pop("anchor"))
    again = cfg.model_copy(deep=True)
    again.rounds = 1
    assert max(r["round"] for r in Runner(again, older).run(resume=True)) == 1


def test_a_checkpoint_whose_config_no_longer_loads_is_refused_by_name(one_round_run):
    """A saved key this version no longer has cannot be read as any config: refuse it, saying so."""
    cfg, out = one_round_run
    newer = _copy(out, "newer")
    _rewrite_saved_config(newer, lambda saved: saved["round"].update(warmup=3))
    before = _files(newer)
    with pytest.raises(CheckpointError, match=r"its config .*config.yaml no longer loads \(round.warmup: unknown key"):
        Runner(cfg, newer).run(resume=True)
    assert _files(newer) == before


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


def test_a_config_value_of_the_wrong_type_is_one_line_naming_the_key(tmp_path):
    for setting, key in (("rounds=three", "rounds"), ("round.max_new_tokens=[80]", "round.max_new_tokens")):
        line = _one_error_line(cli.invoke(app, ["run", "--set", setting, "--out", str(tmp_path / "r")]))
        assert line.startswith(f"error: {key}: Input should be a valid integer"), line
    assert not (tmp_path / "r").exists()


def test_a_data_file_without_the_configured_domains_says_which_keys_to_set(tmp_path):
    data = _gsm8k(tmp_path / "train.jsonl", 50)
    # the quickstart with a data file: its math-mix domains (add, sub, mul) carry over
    out = tmp_path / "run"
    line = _one_error_line(cli.invoke(app, ["run", "--set", "data.source=gsm8k", "--set", f"data.path={data}",
                                            "--out", str(out)]))
    assert line == (f"error: data.domains: {data} has no examples of domain 'add'; it has ['gsm8k']: set data.domains "
                    "(and data.client_domains) to some of these, or data.domains=null data.client_domains=null to use "
                    "all of them")
    line = _one_error_line(cli.invoke(app, ["run", "--set", "data.source=gsm8k", "--set", f"data.path={data}",
                                            "--set", "data.domains=null", "--out", str(out)]))
    assert "data.client_domains[0]: unknown domain 'add'; domains are ['gsm8k']" in line
    assert "data.client_domains=null" in line
    assert not out.exists()


def _tiny_yaml(tmp_path, cfg_dict, **data):
    cfg_dict = {**cfg_dict, "data": {**cfg_dict["data"], **data}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg_dict))
    return path


def test_sequences_longer_than_a_model_fail_before_anything_trains(tiny_config_dict, tmp_path):
    cache = Path(tiny_config_dict["runtime"]["cache_dir"])
    # a training example longer than the server's 512 positions (tiny-llama-xs: one token per character)
    data = _gsm8k(tmp_path / "long.jsonl", 300, steps=30)
    path = _tiny_yaml(tmp_path, tiny_config_dict, source="gsm8k", path=str(data), client_domains=None)
    out = tmp_path / "long"
    line = _one_error_line(cli.invoke(app, ["run", str(path), "--out", str(out)]))
    assert re.fullmatch(r"error: the server's model tiny-llama-xs has 512 positions, but its training example long-\d+ "
                        r"is \d+ tokens \(prompt, solution and eos\); leave longer examples out of the data, or use a "
                        r"model with more positions", line), line
    # a generation longer than a client's model: every prompt plus round.max_new_tokens
    path = _tiny_yaml(tmp_path, {**tiny_config_dict, "round": {**tiny_config_dict["round"], "max_new_tokens": 505}})
    line = _one_error_line(cli.invoke(app, ["run", str(path), "--out", str(out)]))
    m = re.fullmatch(r"error: the server's model tiny-llama-xs has 512 positions, but the prompt of \S+ \((\d+) tokens\) "
                     r"and round.max_new_tokens=505 need (\d+); set round.max_new_tokens to at most (\d+), leave the "
                     r"longest prompts out of the data, or use a model with more positions", line)
    assert m and int(m[2]) == int(m[1]) + 505 and int(m[3]) == 512 - int(m[1]), line
    ok = _tiny_yaml(tmp_path, {**tiny_config_dict, "round": {**tiny_config_dict["round"], "max_new_tokens": int(m[3])}})
    Runner(config_from_dict(yaml.safe_load(ok.read_text())), tmp_path / "fits")  # the suggested value passes the check
    assert not out.exists() and not (cache / "base").exists()  # nothing written, nothing trained


def test_flower_checks_the_data_before_starting_anything(tiny_config_dict, tmp_path):
    pytest.importorskip("flwr")
    from flower_helpers import flower_processes

    path = _tiny_yaml(tmp_path, {**tiny_config_dict, "round": {**tiny_config_dict["round"], "max_new_tokens": 600}})
    before = set(flower_processes())
    for mode in ("simulate", "local"):
        out = tmp_path / mode
        line = _one_error_line(cli.invoke(app, ["flower", mode, str(path), "--out", str(out)]))
        assert "has 512 positions, but the prompt of" in line and not out.exists()
    assert not set(flower_processes()) - before


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


class _NodeReply:
    """What a stand-in grid returns: a normal (non-error) Flower reply carrying a project message."""

    def __init__(self, msg):
        from fedlada.federation.flower.records import to_record

        self.content = to_record(msg)

    def has_error(self):
        return False


def test_a_node_that_refuses_its_state_stops_the_run_in_one_line_also_under_skip(tiny_config_dict, monkeypatch):
    pytest.importorskip("flwr")
    from flwr.supercore.task_identity import TaskIdentity

    for attr in ("_run_id", "_node_id", "_task_id"):  # what a ServerApp has set when it makes messages
        monkeypatch.setattr(TaskIdentity, attr, 1)
    from flower_helpers import StandInGrid

    from fedlada.errors import ClientFailure
    from fedlada.federation.flower.apps import FlowerChannel
    from fedlada.federation.flower.node import NodeError
    from fedlada.hosts import RoundContext
    from fedlada.progress import UI

    refusal = NodeError("CheckpointError", "/nodes/run/client-0 holds the state of another run (...); remove it")
    channel = FlowerChannel(StandInGrid(lambda msg: _NodeReply(refusal)), [11, 12], ["client-0", "client-1"])
    with pytest.raises(CheckpointError, match=r"^/nodes/run/client-0 holds the state of another run"):
        channel.load_clients(None, 1)  # on resume: the node's own line, not a wrapped one
    tiny_config_dict["runtime"]["on_client_failure"] = "skip"  # it would refuse again every round: never skipped
    ctx = RoundContext(1, config_from_dict(tiny_config_dict), None, channel, UI())
    with pytest.raises(ClientFailure) as caught:
        ctx.call(0, Evaluate(1))
    assert str(caught.value) == ("client-0 failed in round 1 on Evaluate: node 11: CheckpointError: /nodes/run/client-0 "
                                 "holds the state of another run (...); remove it")


def test_resuming_under_flower_on_node_state_of_another_run_is_one_line(one_round_run):
    pytest.importorskip("flwr")
    from flower_helpers import flower_processes

    from fedlada.federation.flower.node import run_tag

    _, out = one_round_run  # an in-process run: Flower's resume sends every node Restore(1)
    for k in (0, 1):
        node = out / "nodes" / run_tag(str(out)) / f"client-{k}"
        node.mkdir(parents=True)
        (node / "run.json").write_text(json.dumps({"fingerprint": "0123456789abcdef"}) + "\n")
    before, procs = _files(out), set(flower_processes())
    line = _one_error_line(cli.invoke(app, ["flower", "simulate", "--out", str(out), "--resume"]))
    assert re.fullmatch(r"error: \S+/nodes/done/client-0 holds the state of another run \(config fingerprint "
                        r"0123456789abcdef, this run \w+\); remove it, or give this run its own --out or state-dir", line)
    after = {k: v for k, v in _files(out).items() if not k.startswith("flower")}
    assert after == before and not set(flower_processes()) - procs  # Flower's logs only; nothing left running


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
