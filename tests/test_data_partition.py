import itertools
import json
import re
import warnings
from collections import Counter

import numpy as np
import pytest

from fedlada.config import DataConfig, MathMixConfig
from fedlada.data import build_federation_data
from fedlada.data.files import DataFileError
from fedlada.data.partition import dirichlet_mixtures, split_count

SMALL = dict(client_train=60, client_test=20, public=90, server_corpus=90, global_test_per_domain=15)
DIGITS = MathMixConfig(client_digits=(2, 2), server_digits=(2, 4), public_digits=(3, 4), test_digits=(2, 4))


def math_mix(**changes) -> DataConfig:
    return DataConfig(**{**SMALL, "math_mix": DIGITS, **changes})


def named_sets(data):
    sets = {"server_corpus": data.server_corpus, "public": data.public, "global_test": data.global_test}
    for k, client in enumerate(data.clients):
        sets[f"client{k}.train"], sets[f"client{k}.test"] = client.train, client.test
    return sets


def assert_disjoint(data):
    sets = named_sets(data)
    for name, examples in sets.items():
        assert len({e.prompt for e in examples}) == len(examples), f"{name} repeats a prompt"
    for (a, xs), (b, ys) in itertools.combinations(sets.items(), 2):
        assert not {e.prompt for e in xs} & {e.prompt for e in ys}, f"{a} and {b} share a prompt"
    ids = [e.id for examples in sets.values() for e in examples]
    assert len(set(ids)) == len(ids)


def operand_lengths(examples):
    return {len(n) for e in examples for n in re.findall(r"\d+", e.prompt)[:1]}


def test_math_mix_by_domain_sizes_digits_and_disjointness():
    data = build_federation_data(math_mix(client_domains=[["add"], ["sub", "mul"]]), num_clients=2, seed=0)
    assert_disjoint(data)
    assert data.domains == ["add", "sub", "mul"]
    assert len(data.server_corpus) == 90 and len(data.public) == 90 and len(data.global_test) == 45
    assert Counter(e.domain for e in data.global_test) == {"add": 15, "sub": 15, "mul": 15}
    assert Counter(e.domain for e in data.public) == {"add": 30, "sub": 30, "mul": 30}
    add_client, sub_mul_client = data.clients
    assert add_client.domains == ["add"] and sub_mul_client.domains == ["sub", "mul"]
    assert Counter(e.domain for e in add_client.train) == {"add": 60}
    assert Counter(e.domain for e in sub_mul_client.train) == {"sub": 30, "mul": 30}
    assert Counter(e.domain for e in sub_mul_client.test) == {"sub": 10, "mul": 10}
    assert operand_lengths(add_client.train + sub_mul_client.train) == {2}
    assert operand_lengths(data.public) == {3, 4}
    assert operand_lengths(data.global_test) == {2, 3, 4}


def test_round_robin_domains():
    two = build_federation_data(math_mix(), num_clients=2, seed=0)
    assert [c.domains for c in two.clients] == [["add", "mul"], ["sub"]]
    four = build_federation_data(math_mix(domains=["mul", "add"]), num_clients=4, seed=0)
    assert [c.domains for c in four.clients] == [["mul"], ["add"], ["mul"], ["add"]]
    assert_disjoint(four)  # clients sharing a domain still get different problems


def test_deterministic_per_seed():
    cfg = math_mix(partition="dirichlet")
    assert build_federation_data(cfg, 3, seed=5) == build_federation_data(cfg, 3, seed=5)
    other = build_federation_data(cfg, 3, seed=6)
    assert other.clients[0].train != build_federation_data(cfg, 3, seed=5).clients[0].train


def test_dirichlet_mixtures_and_counts():
    mixtures = dirichlet_mixtures(num_clients=4, num_domains=3, alpha=0.5, seed=0)
    assert mixtures.shape == (4, 3)
    np.testing.assert_allclose(mixtures.sum(axis=1), 1.0)
    assert (mixtures >= 0).all() and len({tuple(row) for row in mixtures.round(6)}) == 4
    assert split_count(10, [0.5, 0.3, 0.2]) == [5, 3, 2]
    assert split_count(7, [1, 1, 1]) == [3, 2, 2]
    assert sum(split_count(1200, mixtures[0].tolist())) == 1200

    cfg = math_mix(partition="dirichlet", dirichlet_alpha=0.5)
    data = build_federation_data(cfg, num_clients=4, seed=0)
    assert_disjoint(data)
    for client, mix in zip(data.clients, mixtures):
        expected = dict(zip(data.domains, split_count(60, mix.tolist())))
        train = Counter(e.domain for e in client.train)
        assert {d: train[d] for d in data.domains} == expected
        assert len(client.test) == 20
        assert client.domains == [d for d in data.domains if train[d] or any(e.domain == d for e in client.test)]


def test_small_alpha_concentrates_clients_on_few_domains():
    spread = dirichlet_mixtures(6, 3, alpha=100.0, seed=1).max(axis=1).mean()
    skewed = dirichlet_mixtures(6, 3, alpha=0.05, seed=1).max(axis=1).mean()
    assert skewed > 0.9 > 0.5 > spread


def test_too_small_a_space_is_a_clear_error():
    tiny = MathMixConfig(client_digits=(1, 1), server_digits=(1, 1), public_digits=(1, 1), test_digits=(1, 1))
    cfg = DataConfig(domains=["mul"], client_train=50, client_test=5, public=5, server_corpus=5,
                     global_test_per_domain=5, math_mix=tiny)  # 1-digit * 2..9 has only 72 problems
    with pytest.raises(ValueError, match="distinct mul problems"):
        build_federation_data(cfg, num_clients=2, seed=0)


def test_unknown_domains_are_rejected():
    with pytest.raises(ValueError, match="unknown math-mix task 'pow'"):
        build_federation_data(math_mix(domains=["add", "pow"]), 1, 0)
    with pytest.raises(ValueError, match=r"client_domains\[1\]: unknown domain 'div'"):
        build_federation_data(math_mix(client_domains=[["add"], ["div"]]), 2, 0)  # div exists, but not here


def test_unnamed_domains_are_the_first_three_tasks():
    data = build_federation_data(math_mix(client_domains=None), 3, 0)
    assert data.domains == ["add", "sub", "mul"]  # div is only where a config names it


def test_gsm_symbolic_templates_are_domains():
    cfg = DataConfig(source="gsm-symbolic", domains=["0", "gsm-03", "25"], client_train=30, client_test=9,
                     public=30, server_corpus=30, global_test_per_domain=5)
    data = build_federation_data(cfg, num_clients=3, seed=0)
    assert data.domains == ["gsm-00", "gsm-03", "gsm-25"]
    assert [c.domains for c in data.clients] == [["gsm-00"], ["gsm-03"], ["gsm-25"]]
    assert all(e.domain == "gsm-03" for e in data.clients[1].train)
    assert_disjoint(data)
    default = build_federation_data(DataConfig(source="gsm-symbolic", **SMALL), num_clients=2, seed=0)
    assert default.domains == [f"gsm-{t:02d}" for t in range(6)]


def gsm8k_file(path, n, duplicate=0):
    rows = [{"question": f"What is {i} plus {i}?", "answer": f"{i}+{i}={2 * i}\n#### {2 * i}"} for i in range(n)]
    rows += rows[:duplicate]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("partition", ["domain", "dirichlet"])
def test_gsm8k_file_is_an_even_iid_split(tmp_path, partition):
    path = gsm8k_file(tmp_path / "gsm.jsonl", 500)  # 435 requested
    cfg = DataConfig(source="gsm8k", path=path, partition=partition, **SMALL)
    data = build_federation_data(cfg, num_clients=3, seed=0)
    assert_disjoint(data)
    assert data.domains == ["gsm8k"]
    assert [(len(c.train), len(c.test), c.domains) for c in data.clients] == [(60, 20, ["gsm8k"])] * 3
    assert (len(data.global_test), len(data.public), len(data.server_corpus)) == (15, 90, 90)
    assert data == build_federation_data(cfg, num_clients=3, seed=0)


def test_small_file_shrinks_with_a_warning(tmp_path):
    path = gsm8k_file(tmp_path / "gsm.jsonl", 150, duplicate=10)  # 435 requested, 150 distinct
    cfg = DataConfig(source="gsm8k", path=path, **SMALL)
    with pytest.warns(UserWarning) as caught:
        data = build_federation_data(cfg, num_clients=3, seed=0)
    messages = " ".join(str(w.message) for w in caught)
    assert "dropped 10 entries whose question repeats" in messages and "shrinks to 34.5%" in messages
    assert_disjoint(data)
    assert [len(c.train) for c in data.clients] == [20, 20, 20]  # int(60 * 150/435)
    assert [len(c.test) for c in data.clients] == [6, 6, 6]
    assert (len(data.public), len(data.server_corpus), len(data.global_test)) == (31, 31, 5)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="set would be empty"):
            build_federation_data(DataConfig(source="gsm8k", path=gsm8k_file(tmp_path / "g2.jsonl", 8), **SMALL), 3, 0)


def test_mathinstruct_sources_are_domains(tmp_path):
    rows = [{"source": f"data/CoT/{name}.json", "instruction": f"{name} question {i}?",
             "output": f"Work.\nThe answer is {i}."} for name in ("math", "gsm") for i in range(100)]
    rows.append({"source": "data/PoT/gsm.json", "instruction": "code", "output": "print(1)"})
    path = tmp_path / "mi.json"
    path.write_text(json.dumps(rows))
    cfg = DataConfig(source="mathinstruct", path=str(path), client_train=30, client_test=10, public=20,
                     server_corpus=20, global_test_per_domain=10)
    with pytest.warns(UserWarning, match="skipped 1 program-of-thought"):
        data = build_federation_data(cfg, num_clients=2, seed=0)
    assert data.domains == ["data/CoT/gsm.json", "data/CoT/math.json"]
    assert [c.domains for c in data.clients] == [["data/CoT/gsm.json"], ["data/CoT/math.json"]]
    assert_disjoint(data)


def test_bad_file_fails_before_anything_else(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "Q?", "answer": "#### 1"}\n{"question": "Q2?"}\n')
    with pytest.raises(DataFileError, match="line 2: missing field 'answer'"):
        build_federation_data(DataConfig(source="gsm8k", path=str(path)), 1, 0)
