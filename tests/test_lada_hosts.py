"""LaDa inside its hosts: the up direction's pairs, reward and carry-over, and `fedmkt+lada` /
`fedcollm+lada` running their host's own exchange on LaDa's picks."""

from types import SimpleNamespace

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedlada.config import config_from_dict
from fedlada.runner import Runner
from fedlada.filter.features import n_features
from fedlada.filter.reward import solved_reward
from fedlada.hosts.base import RoundContext
from fedlada.hosts.fedmkt import Knowledge
from fedlada.lada import server as lada_server
from fedlada.lada.messages import Candidate, PairOffer, UpOffer
from fedlada.lada.server import Lada, LadaExchange, up_offered
from fedlada.lada.transfer import Pending, Pick


def _candidate(sid, server_correct):
    return Candidate(sid, f"Q{sid}", "7", f"server path {sid}", server_correct, 0.5, "add")


def test_up_pairs_only_where_the_client_is_right_and_the_server_wrong():
    candidates = {"a": _candidate("a", True), "b": _candidate("b", False)}
    offers = [UpOffer("a", "client path a", -3.0, 6, -4.0, 6), UpOffer("b", "client path b", -2.0, 4, -5.0, 5)]
    offered = up_offered(offers, candidates)
    assert [o.sample_id for o in offered] == ["b"]  # both right on "a": nothing new for the server
    o = offered[0]
    assert (o.path, o.learner_path, o.learner_correct) == ("client path b", "server path b", False)
    assert o.writer_nll == pytest.approx(0.5)  # the client's per-token NLL of its own path
    pick = Pick(o.sample_id, o.prompt, o.path, True, o.learner_path, o.learner_correct, True, [0.0], 0, 0, 0, 1.0)
    assert Pending(1, [pick]).pairs() == [("Qb", "client path b", "server path b")]  # one contrastive pair


def test_up_reward_pays_for_questions_the_server_now_solves():
    before = np.array([False, False, True, True])
    after = np.array([True, False, True, False])
    assert solved_reward(before, after).tolist() == [1.0, 0.0, 0.0, -1.0]


def _up_round(cfg, round_, sample_ids):
    """A fake round with up picks from client-0, for `Lada._learn_up` alone."""
    picks = [Pick(sid, f"Q{sid}", f"client {sid}", True, f"server {sid}", False, True,
                  [0.1] * n_features(cfg.lada.embedding_dim), 0.0, 0.0, 0.0, 1.0, "7") for sid in sample_ids]
    ex = LadaExchange([], {}, {0: list(sample_ids)}, up_picks={0: Pending(round_, picks)},
                      up_references={(0, sid): (-1.0, 3, -2.0, 3) for sid in sample_ids})
    recorded = {}
    ctx = SimpleNamespace(round=round_, server=SimpleNamespace(), channel=SimpleNamespace(clients=[SimpleNamespace(name="client-0")]),
                          selections=[], record=lambda who, values: recorded.update(values))
    return ex, ctx, recorded


def test_too_few_up_pairs_are_carried_over_and_survive_resume(tiny_config_dict, tmp_path, monkeypatch):
    cfg = config_from_dict(dict(tiny_config_dict, method="standalone+lada", lada={"up_min_pairs": 3}))
    trained = []
    monkeypatch.setattr(lada_server, "learn", lambda learner, pairs, refs, local, r, label: trained.append((pairs, refs)) or {})
    monkeypatch.setattr(lada_server, "own_data_pairs", lambda *a: [])
    monkeypatch.setattr(Lada, "_up_rewards", lambda self, ctx, server, pending, *_: np.ones(len(pending.picks)))

    lada = Lada(cfg, up=True)
    ex, ctx, recorded = _up_round(cfg, 1, ["p", "q"])
    lada._learn_up(ctx, ex)
    assert trained == [] and recorded["lada/up_carried"] == 2  # 2 < 3: the server does not train this round
    lada.save_state(tmp_path / "state")

    resumed = Lada(cfg, up=True)
    resumed.load_state(tmp_path / "state")  # a restart between the two rounds
    assert [c.pick.sample_id for c in resumed.state.carried] == ["p", "q"]
    ex, ctx, recorded = _up_round(cfg, 2, ["r", "s"])
    resumed._learn_up(ctx, ex)
    (pairs, refs), = trained
    assert [p[1] for p in pairs] == ["client p", "client q", "client r", "client s"]  # carried first, then new
    assert all(p[2].startswith("server") for p in pairs) and refs == [(-1.0, 3, -2.0, 3)] * 4
    assert resumed.state.carried == [] and recorded["lada/up_pairs"] == 4
    assert [s["sample_id"] for s in ctx.selections] == ["p", "q", "r", "s"]  # every pick got its reward


def _spy(monkeypatch):
    """Every (client index, message, reply) a host sends during a run."""
    calls = []
    real = RoundContext.call_all

    def call_all(self, requests):
        replies = real(self, requests)
        calls.extend((self.round, index, requests[index], reply) for index, reply in replies.items())
        return replies

    monkeypatch.setattr(RoundContext, "call_all", call_all)
    return calls


def _lada_dict(d, **lada):
    return dict(d, lada={"budget": 8, "up_budget": 3, "up_min_pairs": 1, **lada})


def test_fedmkt_lada_sends_fedmkt_knowledge_on_exactly_the_picks(tiny_config_dict, tmp_path, monkeypatch,
                                                                 teacher_half_right):
    calls = _spy(monkeypatch)
    cfg = config_from_dict(_lada_dict(dict(tiny_config_dict, method="fedmkt+lada")))
    rows = Runner(cfg, tmp_path / "mkt").run()
    for t in (1, 2):
        picks = {i: reply.picks for r, i, _, reply in calls if r == t and isinstance(reply, PairOffer)}
        knowledge = {i: (msg, reply) for r, i, msg, reply in calls if r == t and isinstance(msg, Knowledge)}
        assert set(knowledge) == set(picks) == {0, 1}
        for i, (msg, reply) in knowledge.items():
            assert len(picks[i]) == 8 and sorted(msg.learn) == sorted(picks[i])  # the client learns on its picks
            assert set(msg.sample_ids) == set(msg.learn) | set(msg.ask)
            assert len(msg.ask) <= 3 and reply.sample_ids == msg.ask  # it answers on F_k^up's picks only
    last = {(r["participant"], r["split"]): r for r in rows if r["round"] == 2}
    assert last["client-0", "local_test"]["kd/kd"] > 0 and "seconds/dard" in last["client-0", "local_test"]  # KD, then DARD

    alone = Runner(config_from_dict(_lada_dict(dict(tiny_config_dict, method="standalone+lada"))), tmp_path / "alone").run()
    alone_last = {(r["participant"], r["split"]): r for r in alone if r["round"] == 2}
    assert "kd/kd" not in alone_last["client-0", "local_test"]
    assert last["client-0", "local_test"]["bytes_received"] > alone_last["client-0", "local_test"]["bytes_received"]
    weights = [load_file(tmp_path / run / "checkpoints" / "round-2" / "client-0" / "model" / "model.safetensors")
               for run in ("mkt", "alone")]
    assert any(not np.array_equal(weights[0][k], weights[1][k]) for k in weights[0])  # another round than LaDa alone


@pytest.mark.parametrize("host_up", ["up_picks", "pool"])
def test_fedcollm_lada_averages_then_distils_on_the_picks_only(tiny_config_dict, tmp_path, monkeypatch, host_up,
                                                              teacher_half_right):
    from fedlada.hosts import fedcollm

    calls = _spy(monkeypatch)
    learned = []
    real_learn = fedcollm.learn

    def learn(learner, round_, phase):
        learned.append((round_, learner.name, list(phase.prompts)))  # round, learner, prompts
        return real_learn(learner, round_, phase)

    monkeypatch.setattr(fedcollm, "learn", learn)
    d = dict(tiny_config_dict, method="fedcollm+lada")
    d["clients"] = [{"model": {"name": "tiny-llama-xs", "init_group": "slm"}, "base": d["clients"][0]["base"]}] * 2
    rows = Runner(config_from_dict(_lada_dict(d, host_up=host_up)), tmp_path / "co").run()
    for t in (1, 2):
        down = {sid for r, i, _, reply in calls if r == t and isinstance(reply, PairOffer) for sid in reply.picks}
        offers = [m for r, _, m, _ in calls if r == t and type(m).__name__ == "Candidates"]
        prompt_of = {c.sample_id: c.prompt for c in offers[0].candidates}
        by_learner = {name: prompts for r, name, prompts in learned if r == t}
        assert sorted(by_learner["aggregate"]) == sorted(prompt_of[sid] for sid in down)  # LLM -> aggregate on the picks
        if host_up == "up_picks":  # aggregate -> LLM on the up picks of both clients
            assert len(by_learner.get("server", [])) <= 2 * 3
        else:  # aggregate -> LLM on every candidate, as under fedcollm
            assert sorted(by_learner["server"]) == sorted({c.prompt for c in offers[0].candidates})
    last = {(r["participant"], r["split"]): r for r in rows if r["round"] == 2}
    assert last["server", "global_test"]["fedcollm/averaged"] == 2  # FedAvg of both clients came first


def test_the_server_takes_the_aggregate_only_where_it_fits_the_gold_solution_better(monkeypatch):
    from fedlada.distill.align import Sparse
    from fedlada.hosts import fedcollm

    def dist(i):
        return Sparse(np.array([[i]]), np.array([[1.0]]))

    own = [dist(0), dist(1), dist(2)]
    monkeypatch.setattr(fedcollm, "knowledge", lambda lm, r, prompts, solutions, k, bs: (None, own, np.array([1.0, 3.0, 2.0])))
    teacher = [dist(10), dist(11), dist(12)]
    targets, chosen = fedcollm.better_of(None, teacher, np.array([2.0, 2.0, 2.5]), ["p"] * 3, ["s"] * 3, 4, 8)
    assert [int(t.ids[0, 0]) for t in targets] == [0, 11, 2]  # the teacher only on the sample it fits better
    assert chosen == pytest.approx(1 / 3)


@pytest.mark.parametrize("up_teacher", ["better", "always"])
def test_fedcollm_lada_gates_the_aggregate_by_default(tiny_config_dict, tmp_path, up_teacher):
    d = dict(tiny_config_dict, method="fedcollm+lada", rounds=1)
    d["clients"] = [{"model": {"name": "tiny-llama-xs", "init_group": "slm"}, "base": d["clients"][0]["base"]}] * 2
    rows = Runner(config_from_dict(_lada_dict(d, up_teacher=up_teacher)), tmp_path / up_teacher).run()
    server = next(r for r in rows if r["round"] == 1 and r["participant"] == "server" and r["split"] == "global_test")
    if up_teacher == "better":
        assert 0.0 <= server["fedcollm/teacher_chosen"] <= 1.0
    else:  # FedCoLLM as published: the aggregate's distribution on every sample, nothing chosen
        assert "fedcollm/teacher_chosen" not in server


def test_server_paths_that_reproduce_private_text_are_not_offered(tiny_config_dict, tmp_path, monkeypatch):
    from fedlada.federation.channel import Channel

    calls = _spy(monkeypatch)
    flagged = []

    def private_matches(self, texts):  # the audit says the first path of each round is a private solution
        flagged.append(len(texts))
        return ["client-1-train-0"] + [None] * (len(texts) - 1)

    monkeypatch.setattr(Channel, "private_matches", private_matches)
    rows = Runner(config_from_dict(_lada_dict(dict(tiny_config_dict, method="distill+lada"))), tmp_path / "r").run()
    offers = [m for _, _, m, _ in calls if type(m).__name__ == "Candidates"]
    assert flagged == [20, 20] and {len(m.candidates) for m in offers} == {19}
    server = [r for r in rows if r["participant"] == "server" and r["round"] >= 1]
    assert [r["lada/withheld_private"] for r in server] == [1.0, 1.0]


def test_channel_private_matches_follow_the_audit():
    from fedlada.data.types import Example
    from fedlada.federation.audit import Auditor
    from fedlada.federation.channel import Channel

    secret = Example("client-0-train-0", "24*3=", "4*3+0=12|2*3+1=07|#### 72", "72", "mul")
    channel = Channel([], auditor=Auditor({"client-0": [secret]}))
    assert channel.private_matches(["4*3+0=12|2*3+1=07|#### 72", "4*3+0=12|#### 12"]) == ["client-0-train-0", None]
    assert Channel([]).private_matches(["4*3+0=12|2*3+1=07|#### 72"]) == [None]  # no audit, nothing known


def test_fedmkt_lada_host_up_exchanged_teaches_the_server_on_every_exchanged_sample(tiny_config_dict, tmp_path,
                                                                                    monkeypatch):
    calls = _spy(monkeypatch)
    cfg = config_from_dict(_lada_dict(dict(tiny_config_dict, method="fedmkt+lada", rounds=1), host_up="exchanged"))
    Runner(cfg, tmp_path / "r").run()
    picks = {i: reply.picks for _, i, _, reply in calls if isinstance(reply, PairOffer)}
    for _, i, msg, reply in calls:
        if isinstance(msg, Knowledge):
            assert set(picks[i]) <= set(msg.ask) and sorted(reply.sample_ids) == sorted(msg.ask)
            assert len(msg.ask) <= len(picks[i]) + 3  # the down picks plus at most up_budget up picks


def test_fedmkt_lada_host_up_pool_teaches_the_server_on_every_candidate_but_asks_only_the_picks(
        tiny_config_dict, tmp_path, monkeypatch):
    from fedlada.hosts import fedmkt

    calls = _spy(monkeypatch)
    learned = []
    real_learn = fedmkt.learn
    monkeypatch.setattr(fedmkt, "learn", lambda learner, r, phase: learned.append((r, learner.name, phase.prompts))
                        or real_learn(learner, r, phase))
    cfg = config_from_dict(_lada_dict(dict(tiny_config_dict, method="fedmkt+lada", rounds=1), host_up="pool"))
    Runner(cfg, tmp_path / "r").run()
    offer = next(m for _, _, m, _ in calls if type(m).__name__ == "Candidates")
    (_, _, server_prompts), = [x for x in learned if x[1] == "server"]
    assert sorted(server_prompts) == sorted({c.prompt for c in offer.candidates})  # the whole pool, once each
    for _, i, msg, reply in calls:
        if isinstance(msg, Knowledge):
            assert len(msg.ask) <= 3 and reply.sample_ids == msg.ask  # the clients still answer on F_k^up's picks only


def test_up_heldout_reward_credits_each_pick_along_the_servers_loss_on_the_clients_unpicked_novel_questions(
        tiny_config_dict, tmp_path):
    """`lada.up_reward=heldout`: the slice is the novel questions F_k^up left out (gold solutions), the reward
    each pick's gradient cosine with the server's loss on it (by hand), and the slice survives resume."""
    import torch

    from fedlada.config import ModelConfig
    from fedlada.data.types import Example
    from fedlada.lada.transfer import Offered
    from fedlada.models import load_model

    cfg = config_from_dict(dict(tiny_config_dict, method="fedmkt+lada", lada={"up_reward": "heldout"}))
    lada = Lada(cfg, up=True)
    pool = [Example("a", "12+34=", "2+4+0=06|1+3+0=04|#### 46", "46", "add"),
            Example("b", "11+11=", "1+1+0=02|1+1+0=02|#### 22", "22", "add"),
            Example("c", "5*7=", "5*7+0=35|#### 35", "35", "mul")]
    ex = LadaExchange(pool, {}, {})
    offered = [Offered(e.id, e.prompt, e.answer, e.solution, True, 0.5, True, True) for e in pool]
    lada._keep_heldout(SimpleNamespace(round=1), ex, "client-0", offered, picked={"a"})
    assert [e.id for e in lada.state.heldout["client-0"]] == ["b", "c"]  # the unpicked novel ones, with gold solutions

    lm = load_model(ModelConfig(name="tiny-llama-xs"), device="cpu", seed=3)
    picks = [Pick(sid, prompt, path, True, "wrong", False, True, [0.0], 0.0, 0.0, 0.0, 1.0, "0")
             for sid, prompt, path in (("a", "12+34=", pool[0].solution), ("d", "9-1=", "9-1-0=8|#### 8"))]
    carried = [lada_server.CarriedPick("client-0", p, (-1.0, 3, -2.0, 3)) for p in picks]
    probes = lada._heldout_probes(SimpleNamespace(lm=lm), carried, {"client-0": [0, 1]})
    direction = lm.loss_gradient(["11+11=", "5*7="], [pool[1].solution, pool[2].solution])
    _, _, probe = probes["client-0"]
    for j, p in enumerate(picks):
        g = lm.loss_gradient([p.prompt], [p.path])
        assert probe.cosines[j] == pytest.approx(float(torch.nn.functional.cosine_similarity(g, direction, dim=0)),
                                                 abs=1e-5)
    recorded = {}
    ctx = SimpleNamespace(record=lambda who, values: recorded.update(values))
    reward = lada._up_rewards(ctx, SimpleNamespace(lm=lm), Pending(1, picks), {"client-0": [0, 1]}, probes)
    assert reward.tolist() == pytest.approx(probe.cosines.tolist())
    assert recorded["lada/up_heldout_nll_before/client-0"] == pytest.approx(recorded["lada/up_heldout_nll_after/client-0"])

    lada.save_state(tmp_path / "state")
    resumed = Lada(cfg, up=True)
    resumed.load_state(tmp_path / "state")
    assert resumed.state.heldout == lada.state.heldout


def test_up_loss_none_leaves_the_server_to_the_hosts_loss_and_still_rewards_the_up_filter(tiny_config_dict, monkeypatch):
    cfg = config_from_dict(dict(tiny_config_dict, method="fedmkt+lada", lada={"up_loss": "none", "up_min_pairs": 3}))
    trained = []
    monkeypatch.setattr(lada_server, "learn", lambda *a: trained.append(a) or {})
    monkeypatch.setattr(Lada, "_up_rewards", lambda self, ctx, server, pending, *_: np.ones(len(pending.picks)))
    lada = Lada(cfg, up=True, up_loss="none")
    ex, ctx, recorded = _up_round(cfg, 1, ["p", "q"])
    lada._learn_up(ctx, ex)
    assert trained == [] and lada.state.carried == []  # no LaDa phase for the server, nothing waits for one
    assert [(s["sample_id"], s["reward"]) for s in ctx.selections] == [("p", 1.0), ("q", 1.0)]  # F_k^up still learns


@pytest.mark.parametrize("method, lada, why", [
    ("standalone+lada", {"up_loss": "none"}, "nothing would teach the server"),
    ("fedmkt+lada", {"up_loss": "none", "host_loss": "replace"}, "nothing would teach the server"),
    ("fedmkt+lada", {"up_loss": "none", "up_reward": "heldout"}, "held-out probe needs the server before it learns"),
])
def test_up_loss_none_is_refused_where_it_cannot_work(tiny_config_dict, method, lada, why):
    from fedlada.config import ConfigError
    from fedlada.methods import build_host

    with pytest.raises((ValueError, ConfigError), match=why):
        build_host(config_from_dict(dict(tiny_config_dict, method=method, lada=lada)))


def test_up_loss_defaults_to_the_hosts_loss_where_it_teaches_the_server(tiny_config_dict):
    from fedlada.methods import METHODS

    def default(method, **lada):
        return METHODS[method](config_from_dict(dict(tiny_config_dict, method=method, lada=lada))).lada.up_loss

    assert default("fedmkt+lada") == default("fedcollm+lada") == "none"
    assert default("standalone+lada") == default("fedmkt+lada", host_loss="replace") == "lada"  # nothing else would
    assert default("fedmkt+lada", up_loss="lada") == "lada"
