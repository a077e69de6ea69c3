"""LaDa wired into the runner: selections are logged with rewards, and filter state survives resume."""

import json

import pytest
from conftest import run_cut_after_round_one

from fedlada.config import config_from_dict
from fedlada.lada.transfer import selector_for
from fedlada.runner import Runner
from fedlada.report import write_report


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _key(rows):
    keep = lambda k: k in ("round", "participant", "split", "accuracy", "n") or k.startswith(("loss/", "lada/", "dard/"))
    return [{k: v for k, v in r.items() if keep(k) and k != "loss/base"} for r in rows]


@pytest.fixture
def lada_config(tiny_config_dict, teacher_half_right):
    tiny_config_dict["method"] = "distill+lada"
    tiny_config_dict["lada"] = {"budget": 6, "up_budget": 4}
    return tiny_config_dict


@pytest.mark.parametrize("reward, low, embedding_dim", [("nll_drop", 0.0, 16), ("heldout", -1.0, 16), ("heldout", -1.0, 0)])
def test_distill_lada_logs_every_selection_with_a_reward(lada_config, tmp_path, reward, low, embedding_dim):
    lada_config["lada"] |= {"reward": reward, "embedding_dim": embedding_dim}
    cfg = config_from_dict(lada_config)
    Runner(cfg, tmp_path / "run").run()
    sel = _lines(tmp_path / "run" / "selections.jsonl")
    for t in (1, 2):
        for client in ("client-0", "client-1"):
            rows = [r for r in sel if r["round"] == t and r["client"] == client]
            assert len(rows) == 6 and {r["direction"] for r in rows} == {"down"}
            assert len({r["sample_id"] for r in rows}) == 6  # distinct samples
            for r in rows:
                assert low <= r["reward"] <= 1.0 and len(r["features"]) == 6 + embedding_dim
                assert isinstance(r["own_domain"], bool)
                assert r["f1"] is not None and r["f2"] is not None
                assert r["teacher_correct"]  # the filter chooses among correct server paths only
    assert not [r for r in sel if r["direction"] == "up"]  # distill does not train the server
    assert {r["domain"] for r in sel} <= {"add", "sub", "mul"}
    text = write_report(tmp_path / "run").read_text()
    mean_r1 = sum(r["reward"] for r in sel if r["round"] == 1 and r["client"] == "client-0") / 6
    assert "## Filters" in text and f"| 1 | {mean_r1:.3f} |" in text
    ckpt = tmp_path / "run" / "checkpoints" / "round-2" / "client-0" / "state"
    state = json.loads((ckpt / "state.json").read_text())
    assert state["filter_down"]["kind"] == "eenet" and state["filter_down"]["updates"] == 2


def test_lada_resume_selects_and_scores_like_uninterrupted(lada_config, tmp_path):
    cfg = config_from_dict(lada_config)
    full = Runner(cfg, tmp_path / "full").run()
    resumed = run_cut_after_round_one(cfg, tmp_path / "cut")
    assert _key(resumed) == _key(full)
    assert _lines(tmp_path / "cut" / "selections.jsonl") == _lines(tmp_path / "full" / "selections.jsonl")


def test_standalone_lada_runs_both_directions(lada_config, tmp_path):
    lada_config["method"] = "standalone+lada"
    lada_config["lada"]["filter"] = "random"
    rows = Runner(config_from_dict(lada_config), tmp_path / "run").run()
    server_r1 = [r for r in rows if r["round"] == 1 and r["participant"] == "server"][0]
    client_r1 = [r for r in rows if r["round"] == 1 and r["participant"] == "client-0"][0]
    # the up offer (client paths + scalars) makes client -> server traffic larger than in distill+lada
    assert client_r1["bytes_sent"] > 0 and server_r1["bytes_received"] == sum(
        r["bytes_sent"] for r in rows if r["round"] == 1 and r["role"] == "client" and r["split"] == "global_test")


def test_client_picks_only_correct_teacher_paths_learns_from_them_and_rewards_them(lada_config, tmp_path):
    """One LaDa exchange with a perfect 'teacher' (gold solutions) on 12 candidates and a wrong path on 4:
    the filter chooses among the 12 only (a wrong path makes no pair), so a budget of 12 takes exactly
    them, the base rate it logs is over them, and the rewards are positive."""
    from fedlada.federation.messages import Prepare
    from fedlada.lada.messages import Candidate, Candidates, Reference, References

    lada_config["lada"].update(budget=12, reward="nll_drop")
    lada_config["round"]["transfer"] = {"steps": 20, "batch_size": 8, "lr": 1e-2}
    runner = Runner(config_from_dict(lada_config), tmp_path / "run")
    client = runner.clients[0]
    client.handle(Prepare())
    pool = runner.server.public[:16]
    wrong = {0, 1, 2, 3}  # these get a wrong teacher path
    paths = ["1+1+0=02|#### 2" if i in wrong else e.solution for i, e in enumerate(pool)]
    offer = client.handle(Candidates(1, [
        Candidate(e.id, e.prompt, e.answer, path, i not in wrong, 0.05, e.domain)
        for i, (e, path) in enumerate(zip(pool, paths))], False))
    assert not offer.up  # no up offer when the host does not train the server
    assert sorted(offer.picks) == sorted(e.id for i, e in enumerate(pool) if i not in wrong)
    correct = [e for i, e in enumerate(pool) if i not in wrong]
    assert offer.values["lada/own_base_rate"] == pytest.approx(
        sum(e.domain in client.domains for e in correct) / len(correct))
    report = client.handle(References(1, [Reference(r.sample_id, -5.0, 10, -60.0, 12) for r in offer.needs_reference]))
    rewards = [p.reward for p in report.picks]
    assert len(rewards) == 12 and sum(rewards) / len(rewards) > 0.05
    assert report.values["dard/pairs"] + report.values["dard/sft_only"] >= 12
    assert client.state["filter_down"]["updates"] == 1 and "pending" not in client.state


def test_a_server_that_solved_nothing_teaches_nothing_and_leaves_the_filter_as_it_was(lada_config, tmp_path):
    from fedlada.federation.messages import Prepare
    from fedlada.lada.messages import Candidate, Candidates, References

    runner = Runner(config_from_dict(lada_config), tmp_path / "run")
    client = runner.clients[0]
    client.handle(Prepare())
    weights = {k: v.clone() for k, v in client.lm.state_dict_cpu().items()}
    offer = client.handle(Candidates(1, [Candidate(e.id, e.prompt, e.answer, "0+0+0=00|#### 0", False, 0.05, e.domain)
                                         for e in runner.server.public[:8]], False))
    assert offer.picks == [] and offer.needs_reference == []
    report = client.handle(References(1, []))
    assert report.picks == [] and report.values["lada/selected"] == 0
    assert "filter_down" not in client.state and "pending" not in client.state
    assert all(v.equal(client.lm.state_dict_cpu()[k]) for k, v in weights.items())  # no phase on nothing


def test_a_path_that_reproduces_private_text_never_leaves_the_client(lada_config, tmp_path):
    """The learner 'writes' one of its own training solutions as its (wrong) path on a public question:
    that pair is trained with the frozen learner as reference and its text is not in the reply."""
    from fedlada.federation.messages import Prepare, encode
    from fedlada.lada.messages import Candidate, Candidates, References

    lada_config["lada"].update(budget=8, filter="random", reward="nll_drop")
    runner = Runner(config_from_dict(lada_config), tmp_path / "run")
    client = runner.clients[0]
    client.handle(Prepare())
    pool = runner.server.public[:8]
    secret = client.train[0].solution
    client.lm.generate = lambda prompts, *a, **k: [secret] * len(prompts)  # every own path: a private solution
    offer = client.handle(Candidates(1, [Candidate(e.id, e.prompt, e.answer, e.solution, True, 0.05, e.domain)
                                         for e in pool], False))
    assert offer.needs_reference == [] and offer.values["lada/withheld_private"] == 8
    assert secret not in encode(offer).decode("utf-8", "replace")
    report = client.handle(References(1, []))
    assert len(report.picks) == 8 and report.values["dard/pairs"] >= 8  # all 8 still contrasted (+ own-data pairs)


def test_net_features_scalars_feeds_the_nets_the_six_scalars(lada_config):
    lada_config["lada"]["net_features"] = "scalars"
    cfg = config_from_dict(lada_config)
    sel = selector_for(cfg, None, "client-0", "filter_down")
    assert (sel.net_inputs, sel.n_features) == (6, 6 + cfg.lada.embedding_dim)
