"""The packaged GSM8K config: one command on a GSM8K-format file, with data that fits its models."""

import json

import pytest

from fedlada.config import ConfigError, load_config
from fedlada.federation.fit import federation_data

SMALL = ["data.client_train=40", "data.client_test=10", "data.client_heldout=4", "data.public=40",
         "data.server_corpus=40", "data.global_test_per_domain=10"]


def gsm8k_file(path, n):
    rows = [{"question": f"Tom has {a} apples and buys {a + 7} more. How many apples does he have now?",
             "answer": f"He has {a} + {a + 7} = <<{a}+{a + 7}={2 * a + 7}>>{2 * a + 7} apples.\n#### {2 * a + 7}"}
            for a in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_without_a_file_it_says_what_to_set():
    with pytest.raises(ConfigError, match="data.path is required for data.source=gsm8k"):
        load_config("gsm8k")


def test_a_gsm8k_file_gives_disjoint_sets_of_the_sizes_asked(tmp_path):
    cfg = load_config("gsm8k", [f"data.path={gsm8k_file(tmp_path / 'train.jsonl', 400)}", *SMALL])
    data = federation_data(cfg)
    assert [len(c.train) for c in data.clients] == [40, 40]
    assert [len(c.test) for c in data.clients] == [10, 10]
    assert len(data.public) == 40 and len(data.server_corpus) == 40 and len(data.global_test) == 10
    sets = [data.public, data.server_corpus, data.global_test] + [s for c in data.clients for s in (c.train, c.test, c.heldout)]
    prompts = [e.prompt for s in sets for e in s]
    assert len(prompts) == len(set(prompts)) == 40 + 40 + 10 + 2 * (40 + 10 + 4)


def test_the_quickstart_on_a_gsm8k_file_names_the_keys_to_change(tmp_path):
    path = gsm8k_file(tmp_path / "train.jsonl", 400)
    cfg = load_config("quickstart", ["data.source=gsm8k", f"data.path={path}"])
    with pytest.raises(Exception, match=r"no examples of domain 'add'.*data.domains=null"):
        federation_data(cfg)
