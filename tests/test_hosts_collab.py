"""The FedMKT and FedCoLLM hosts, alone and with LaDa: FedAvg math, config checks, tiny two-round runs."""

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from fedlada.config import ConfigError, config_from_dict
from fedlada.runner import Runner
from fedlada.hosts.fedcollm import fedavg
from fedlada.methods import check


def test_fedavg_of_identical_models_is_the_model():
    rng = np.random.default_rng(0)
    state = {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=4).astype(np.float32)}
    out = fedavg([state, state, state], [10, 20, 30])
    for k in state:
        np.testing.assert_allclose(out[k], state[k], rtol=1e-6)
        assert out[k].dtype == np.float32


def test_fedavg_of_two_models_is_their_weighted_mean():
    a, b = {"w": np.array([0.0, 2.0])}, {"w": np.array([4.0, 6.0])}
    np.testing.assert_allclose(fedavg([a, b], [1, 1])["w"], [2.0, 4.0])
    np.testing.assert_allclose(fedavg([a, b], [3, 1])["w"], [1.0, 3.0])  # weights by training-set size
    with pytest.raises(ValueError):
        fedavg([a], [1, 2])


def _homogeneous(d):
    d["clients"] = [{"model": {"name": "tiny-llama-xs", "init_group": "slm"}, "base": d["clients"][0]["base"]}] * 2
    return d


def test_fedcollm_config_checks(tiny_config_dict):
    d = dict(tiny_config_dict, method="fedcollm")
    with pytest.raises(ConfigError, match="every clients"):
        check(config_from_dict(d))
    d["clients"] = [{"model": {"name": "tiny-llama-xs"}, "base": {"steps": 5}}] * 2
    with pytest.raises(ConfigError, match="init_group"):
        check(config_from_dict(d))


def _round_rows(rows, t):
    return {(r["participant"], r["split"]): r for r in rows if r["round"] == t}


def _client_weights(out, name):
    return load_file(out / "checkpoints" / "round-2" / name / "model" / "model.safetensors")


@pytest.mark.parametrize("method", ["fedcollm", "fedcollm+lada"])
def test_fedcollm_tiny_runs(tiny_config_dict, tmp_path, method, teacher_half_right):
    cfg = config_from_dict(_homogeneous(dict(tiny_config_dict, method=method)))
    out = tmp_path / method
    rows = Runner(cfg, out).run()
    last = _round_rows(rows, 2)
    assert set(last) >= {("server", "global_test"), ("client-0", "local_test"), ("client-1", "global_test")}
    w0, w1 = _client_weights(out, "client-0"), _client_weights(out, "client-1")
    same = all(np.array_equal(w0[k], w1[k]) for k in w0)
    if method == "fedcollm":
        # every client ends the round with the aggregate: identical weights, identical global accuracy
        assert same
        assert last["client-0", "global_test"]["accuracy"] == last["client-1", "global_test"]["accuracy"]
        assert last["server", "global_test"]["kd/kd"] > 0  # the server distilled from the aggregate
    else:  # LaDa's exchange runs after the broadcast, per client
        sel = [json.loads(line) for line in (out / "selections.jsonl").read_text().splitlines()]
        assert {(r["client"], r["direction"]) for r in sel if r["round"] == 2} >= {("client-0", "down"), ("client-1", "down")}
    # weights travel both ways every round: at least a model's worth per client and direction
    n_params = sum(v.size for v in w0.values())
    assert last["client-0", "local_test"]["bytes_sent"] >= 4 * n_params
    assert last["server", "global_test"]["bytes_sent"] >= 2 * 4 * n_params


def test_fedmkt_tiny_runs_exchange_logits_and_both_sides_learn(tiny_config_dict, tmp_path):
    cfg = config_from_dict(dict(tiny_config_dict, method="fedmkt"))
    mkt = _round_rows(Runner(cfg, tmp_path / "fedmkt").run(), 2)
    for who in ("server", "client-0", "client-1"):
        split = "global_test" if who == "server" else "local_test"
        assert mkt[who, split]["kd/lm"] > 0 and mkt[who, split]["kd/kd"] > 0  # a*L_LM + (1-a)*L_KD trained
        assert 0 <= mkt[who, split]["fedmkt/teacher_chosen"] <= 1
    # per-token top-k logits: far more bytes than the text they are computed on
    assert mkt["server", "global_test"]["bytes_sent"] > 100_000


def test_fedmkt_resume_matches_uninterrupted(tiny_config_dict, tmp_path):
    from conftest import run_cut_after_round_one

    cfg = config_from_dict(dict(tiny_config_dict, method="fedmkt"))
    full = Runner(cfg, tmp_path / "full").run()
    resumed = run_cut_after_round_one(cfg, tmp_path / "cut")
    key = lambda r: (r["round"], r["participant"], r["split"])  # noqa: E731
    assert [(key(r), r["accuracy"]) for r in full] == [(key(r), r["accuracy"]) for r in resumed]


def test_init_group_gives_a_common_start_and_own_init_does_not(tiny_config_dict):
    from fedlada.federation.participants import init_seed

    cfg = config_from_dict(_homogeneous(dict(tiny_config_dict, method="fedcollm")))
    m = cfg.clients[0].model
    assert init_seed(cfg, "client-0", m) == init_seed(cfg, "client-1", m)
    plain = cfg.server.model
    assert init_seed(cfg, "client-0", plain) != init_seed(cfg, "client-1", plain)


def test_public_weights_skew_the_public_set():
    from collections import Counter

    from fedlada.config import DataConfig
    from fedlada.data import build_federation_data

    cfg = DataConfig(domains=["add", "sub", "mul"], client_domains=[["add"], ["sub"], ["mul"]], client_train=20,
                     client_test=5, public=100, server_corpus=30, global_test_per_domain=5,
                     public_weights={"add": 0.8, "sub": 0.1, "mul": 0.1})
    data = build_federation_data(cfg, 3, seed=0)
    assert Counter(e.domain for e in data.public) == {"add": 80, "sub": 10, "mul": 10}
    with pytest.raises(ValueError, match="public_weights"):
        build_federation_data(cfg.model_copy(update={"public_weights": {"div": 1.0}}), 3, seed=0)


def test_transfer_lr_changes_one_participants_transfer_rate_and_not_its_base_model(tiny_config_dict, tmp_path):
    from fedlada.data import build_federation_data
    from fedlada.federation.participants import Server
    from fedlada.progress import UI

    plain = config_from_dict(tiny_config_dict)
    slow = config_from_dict(dict(tiny_config_dict, server={**tiny_config_dict["server"], "transfer_lr": 3e-4}))
    assert slow.server.transfer(slow.round) == slow.round.transfer.model_copy(update={"lr": 3e-4})
    assert slow.clients[0].transfer(slow.round) == slow.round.transfer == plain.server.transfer(plain.round)
    # the base-model cache key leaves transfer_lr out: the second server is read from the cache
    data = build_federation_data(plain.data, len(plain.clients), plain.seed)
    kw = dict(device=torch.device("cpu"), cache_dir=tmp_path / "cache", ui=UI())
    first = Server(plain, data.server_corpus, data.public, data.global_test, **kw).prepare()
    second = Server(slow, data.server_corpus, data.public, data.global_test, **kw).prepare()
    assert (first["cached"], second["cached"]) == (0.0, 1.0)


def test_fedcollm_metrics_rows_keep_their_test_set_sizes(tiny_config_dict, tmp_path):
    cfg = config_from_dict(_homogeneous(dict(tiny_config_dict, method="fedcollm", rounds=1)))
    rows = Runner(cfg, tmp_path / "r").run()
    client = {(r["split"]): r for r in rows if r["round"] == 1 and r["participant"] == "client-0"}
    assert client["local_test"]["n"] == 12  # data.client_test, not the training-set size FedAvg weights by
    assert client["local_test"]["fedcollm/train_examples"] == 40
