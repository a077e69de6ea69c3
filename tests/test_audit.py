"""The privacy audit: what it flags (exactly, after whitespace/case changes, in nested records), what it
must not flag, and that tiny runs of every method pass it while a leaking handler is stopped."""

from dataclasses import dataclass

import pytest

from fedlada.config import config_from_dict
from fedlada.data import build_federation_data
from fedlada.data.types import Example
from fedlada.errors import PrivacyViolation
from fedlada.federation.audit import Auditor
from fedlada.federation.messages import REGISTRY, Message, Report, TeacherPaths, encode, register
from fedlada.federation.participants import CLIENT_HANDLERS, register_handlers
from fedlada.federation.audit import auditor_for
from fedlada.runner import Runner
from fedlada.hosts import RoundContext
from fedlada.report import write_report

PRIVATE = [
    Example("c0-train-7", "737+375=", "7+5+0=12|3+7+1=11|7+3+1=11|#### 1112", "1112", "add"),
    Example("c0-test-2", "Tom has 3 apples and buys 4 more.\nHow many apples does he have?\n",
            "3 + 4 = 7\n#### 7", "7", "gsm"),
]


def _auditor():
    return Auditor({"client-0": PRIVATE})


def _violation(msg: Message) -> str:
    with pytest.raises(PrivacyViolation) as info:
        _auditor().check(encode(msg), "client-0", "server")
    return str(info.value)


def _paths(prompts, paths=None, ids=None):
    n = len(prompts)
    return TeacherPaths(1, ids or [f"public-{i}" for i in range(n)], prompts, paths or ["x"] * n, [True] * n)


def test_exact_and_whitespace_case_variants_are_caught_with_field_and_sample():
    text = _violation(_paths(["1+1=", "737+375="]))
    assert "TeacherPaths from client-0 to server" in text and "field prompts[1]" in text
    assert "private prompt of sample c0-train-7 (client-0)" in text
    assert "737+375=" not in text  # the error names the sample, never repeats its private text
    for variant in ["737 + 375 =", "  737+375=\n", "so: 737 +375= ?"]:
        assert "field prompts[0]" in _violation(_paths([variant]))
    gsm = "TOM has 3 apples   and buys 4 more. How many\tapples does he have?"
    assert "sample c0-test-2" in _violation(_paths(["q"], paths=[f"Answer: {gsm.lower()} It is 7."]))
    assert "private solution" in _violation(_paths(["q"], paths=["7+5+0=12 | 3+7+1=11|7+3+1=11|####1112"]))
    assert "private sample id" in _violation(_paths(["q"], ids=["c0-train-7"]))


@dataclass
class Nested(Message):
    round: int
    records: list


@dataclass
class LeakRequest(Message):
    shout: bool


@dataclass
class LeakReply(Message):
    records: list


@pytest.fixture
def test_messages():
    """Registered for one test only (the Flower records test round-trips every registered message)."""
    for cls in (Nested, LeakRequest, LeakReply):
        register(cls)
    yield
    for cls in (Nested, LeakRequest, LeakReply):
        del REGISTRY[cls.__name__]


def test_nested_records_and_dict_keys_are_walked_and_answers_named_with_their_question(test_messages):
    msg = Nested(1, [{"id": "public-3", "meta": {"texts": ["ok", "Tom has 3 apples and buys 4 more. How many apples "
                                                             "does he have?"]}}])
    assert "field records[0].meta.texts[1]" in _violation(msg)
    text = _violation(Nested(1, [{"sample": "c0-train-7", "answer": "1112"}]))
    assert "field records[0].sample" in text and "next to its answer in field records[0].answer" in text
    assert "key #0" in _violation(Report({"737+375=": 1.0}))


def test_what_is_not_flagged():
    a = _auditor()
    ok = [
        _paths(["1737+375="]),  # the private prompt inside a longer public number is not that prompt
        _paths(["737+3750="]),
        _paths(["5+2="], paths=["#### 1112"], ids=["public-1"]),  # an answer alone: a number, everywhere
        _paths(["7+0="], paths=["7"]),
        Report({"loss/local": 0.5, "accuracy": 7.0}),
    ]
    for msg in ok:
        a.check(encode(msg), "server", "client-0")
    assert a.take_counts()["audit/messages"] == len(ok)


@pytest.mark.parametrize("source", ["math-mix", "gsm-symbolic"])
def test_no_public_or_server_text_is_private_by_construction(tiny_config_dict, source):
    """The split never lets a client's private example into P or G (prompts are deduplicated): an
    audit of everything the server may send finds nothing, so the audit stops only real leaks."""
    d = tiny_config_dict["data"]
    if source == "gsm-symbolic":
        d.update(source="gsm-symbolic", client_domains=None, math_mix={})
        d.pop("math_mix")
    data = build_federation_data(config_from_dict(tiny_config_dict).data, 2, 0)
    server_side = data.public + data.server_corpus + data.global_test
    msg = TeacherPaths(1, [e.id for e in server_side], [e.prompt for e in server_side],
                       [e.solution for e in server_side], [True] * len(server_side))
    auditor = auditor_for(data)
    auditor.check(encode(msg), "server", "client-0")
    private = [e for c in data.clients for e in c.train + c.test]
    leak = TeacherPaths(1, ["p"], [private[-1].prompt], ["x"], [True])
    with pytest.raises(PrivacyViolation):
        auditor.check(encode(leak), "server", "client-0")


def _homogeneous(d):
    d["clients"] = [{"model": {"name": "tiny-llama-xs", "init_group": "slm"}, "base": d["clients"][0]["base"]}] * 2
    return d


@pytest.mark.parametrize("method", ["standalone", "distill", "fedmkt", "fedcollm", "distill+lada"])
def test_tiny_run_of_every_method_passes_the_audit(tiny_config_dict, tmp_path, method):
    d = dict(tiny_config_dict, method=method, rounds=1)
    d["lada"] = {"budget": 6, "up_budget": 4}
    if method == "fedcollm":
        _homogeneous(d)
    out = tmp_path / "run"
    rows = Runner(config_from_dict(d), out).run()
    server = [r for r in rows if r["participant"] == "server"]
    # every request and reply was audited: 2 clients x (Prepare + Evaluate) x 2 in round 0 at least
    assert server[0]["audit/messages"] >= 8 and server[0]["audit/bytes"] > 0
    assert server[1]["audit/messages"] > server[0]["audit/messages"] or method == "standalone"
    assert "Privacy audit: every message was checked" in write_report(out, plot=False).read_text()


@pytest.fixture
def leaky_handler(test_messages):
    def leak(client, msg):
        prompt = client.train[3].prompt
        if msg.shout:
            prompt = "  " + " ".join(prompt.upper())
        return LeakReply([{"kind": "note", "text": "fine"}, {"kind": "path", "text": f"I recall: {prompt}"}])

    register_handlers({LeakRequest: leak})
    yield
    del CLIENT_HANDLERS[LeakRequest]


@pytest.mark.parametrize("shout", [False, True])
def test_a_leaking_handler_is_stopped_with_the_field_named_even_under_skip(tiny_config_dict, tmp_path, leaky_handler, shout):
    tiny_config_dict["runtime"]["on_client_failure"] = "skip"
    cfg = config_from_dict(tiny_config_dict)
    runner = Runner(cfg, tmp_path / "run")  # no training needed: the handler only reads its data
    ctx = RoundContext(1, cfg, runner.server, runner.channel, runner.ui)
    with pytest.raises(PrivacyViolation) as info:
        ctx.call(1, LeakRequest(shout))
    text = str(info.value)
    assert text.startswith("privacy audit: LeakReply from client-1 to server: field records[1].text holds the "
                           f"private prompt of sample {runner.clients[1].train[3].id} (client-1)")
    assert not ctx.failed  # a leak is never a skippable client failure
    cfg_off = config_from_dict({**tiny_config_dict, "runtime": {**tiny_config_dict["runtime"], "audit": False}})
    quiet = Runner(cfg_off, tmp_path / "off")
    assert quiet.channel.auditor is None and isinstance(quiet.channel.call(1, LeakRequest(shout)), LeakReply)


def test_a_client_can_find_its_generations_that_reproduce_private_text(tiny_config_dict, tmp_path):
    runner = Runner(config_from_dict(tiny_config_dict), tmp_path / "run")
    client = runner.clients[1]
    mine = client.train[5]
    texts = [mine.solution, "1+1=2", f"Sure: {mine.prompt.upper()}", "#### " + mine.answer]
    assert client.private_matches(texts) == [mine.id, None, mine.id, None]


def test_a_reply_is_checked_against_its_own_clients_data_only():
    a = Auditor({"client-0": PRIVATE[:1], "client-1": PRIVATE[1:]})
    other = encode(_paths(["q"], paths=["737+375= is what I wrote"]))
    a.check(other, "client-1", "server", owner="client-1")  # client-1 never had client-0's example
    with pytest.raises(PrivacyViolation, match="c0-train-7"):
        a.check(other, "client-0", "server", owner="client-0")
    with pytest.raises(PrivacyViolation, match="c0-train-7"):
        a.check(other, "server", "client-1")  # a request: every client's data counts


def test_a_leak_found_on_a_flower_node_reaches_the_server_without_the_sample(tiny_config_dict, tmp_path, leaky_handler,
                                                                              monkeypatch, capsys):
    pytest.importorskip("flwr")
    from flwr.app import Context, RecordDict
    from flwr.app import Message as FlowerMessage
    from flwr.supercore.task_identity import TaskIdentity

    for attr in ("_run_id", "_node_id", "_task_id"):  # what a ServerApp has set when it makes messages
        monkeypatch.setattr(TaskIdentity, attr, 1)
    from fedlada.config import dump_config
    from fedlada.federation.flower.apps import client_main
    from fedlada.federation.flower.node import NodeError
    from fedlada.federation.flower.records import from_record, to_record
    from fedlada.federation.messages import Prepare

    cfg = config_from_dict(tiny_config_dict)
    context = Context(run_id=1, node_id=12, node_config={"partition-id": 1, "num-partitions": 2,
                                                         "state-dir": str(tmp_path / "nodes")},
                      state=RecordDict(), run_config={"config-yaml": dump_config(cfg), "out": str(tmp_path / "run")})

    def send(msg):
        request = FlowerMessage(to_record(msg), dst_node_id=12, message_type="query.fedlada")
        return from_record(client_main(request, context).content)

    send(Prepare())
    reply = send(LeakRequest(False))
    sample = Runner(cfg, tmp_path / "run").clients[1].train[3].id
    assert isinstance(reply, NodeError) and reply.kind == "PrivacyViolation"
    assert reply.message.startswith("privacy audit on the node: the reply of client-1 holds its private text")
    assert sample not in reply.message and f"sample {sample}" in capsys.readouterr().err  # only the node's log names it
