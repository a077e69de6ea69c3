"""LaDa wired into the runner: selections are logged with rewards, and filter state survives resume."""

import json

import pytest

from fedlada.config import config_from_dict
from fedlada.federation.runner import Runner


class Interrupt(Exception):
    pass


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _key(rows):
    keep = lambda k: k in ("round", "participant", "split", "accuracy", "n") or k.startswith(("loss/", "lada/", "dard/"))
    return [{k: v for k, v in r.items() if keep(k) and k != "loss/base"} for r in rows]


@pytest.fixture
def lada_config(tiny_config_dict):
    tiny_config_dict["method"] = "distill+lada"
    tiny_config_dict["lada"] = {"budget": 6, "up_budget": 4}
    return tiny_config_dict


def test_distill_lada_logs_every_selection_with_a_reward(lada_config, tmp_path):
    cfg = config_from_dict(lada_config)
    Runner(cfg, tmp_path / "run").run()
    sel = _lines(tmp_path / "run" / "selections.jsonl")
    for t in (1, 2):
        for client in ("client-0", "client-1"):
            rows = [r for r in sel if r["round"] == t and r["client"] == client]
            assert len(rows) == 6 and {r["direction"] for r in rows} == {"down"}
            assert len({r["sample_id"] for r in rows}) == 6  # distinct samples
            for r in rows:
                assert 0.0 <= r["reward"] <= 1.0 and len(r["features"]) == 6 + cfg.lada.embedding_dim
                assert r["f1"] is not None and r["f2"] is not None
                if not r["teacher_correct"]:
                    assert r["reward"] == 0.0  # no correct target, nothing learnable (DESIGN 3.3)
    assert not [r for r in sel if r["direction"] == "up"]  # distill does not train the server
    ckpt = tmp_path / "run" / "checkpoints" / "round-2" / "client-0" / "state"
    state = json.loads((ckpt / "state.json").read_text())
    assert state["filter_down"]["kind"] == "eenet" and state["filter_down"]["updates"] == 2


def test_lada_resume_selects_and_scores_like_uninterrupted(lada_config, tmp_path):
    cfg = config_from_dict(lada_config)
    full = Runner(cfg, tmp_path / "full").run()

    def stop_after_one(t, rows):
        if t == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        Runner(cfg, tmp_path / "cut").run(on_round=stop_after_one)
    resumed = Runner(cfg, tmp_path / "cut").run(resume=True)
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
