"""The pretrained scenario's one-round smoke run (docs/models.md): Gemma-3-270M server, two SmolLM2 LoRA
clients, across the two tokenizers. Slow (minutes per method on 2 CPU cores); skips, saying what to
install, when a model's package is missing."""

import importlib.util

import pytest

from fedlada.config import load_config
from fedlada.models.loading import GEMMA3, PACKAGED, SMOLLM2
from fedlada.runner import Runner

# the smoke settings printed in docs/models.md ("A pretrained federation")
SMOKE = ["rounds=1", "data.client_train=64", "data.client_test=16", "data.client_heldout=8", "data.public=64",
         "data.server_corpus=64", "data.global_test_per_domain=16", "server.base.steps=20", "clients.0.base.steps=20",
         "clients.1.base.steps=20", "round.local.steps=5", "round.transfer.steps=10", "round.candidates=32",
         "lada.budget=8", "lada.up_budget=4", "round.max_new_tokens=64", "runtime.eval_batch_size=16"]


@pytest.fixture(scope="module", autouse=True)
def _models():
    for name in (GEMMA3, SMOLLM2):
        if any(importlib.util.find_spec(m) is None for m in PACKAGED[name].modules):
            pytest.skip(f"optional extra for {name}: {PACKAGED[name].install}")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["distill+lada", "fedmkt"])
def test_one_smoke_round_runs_across_the_two_tokenizers(method, tmp_path):
    cfg = load_config("scenarios/pretrained", [f"method={method}", *SMOKE])
    assert cfg.server.model.name == GEMMA3 and {c.model.name for c in cfg.clients} == {SMOLLM2}
    rows = Runner(cfg, tmp_path / "run").run()
    seen = {(r["round"], r["participant"]) for r in rows}
    assert seen == {(t, p) for t in (0, 1) for p in ("server", "client-0", "client-1")}
    client1 = [r for r in rows if r["round"] == 1 and r["role"] == "client"]
    # the server's knowledge reached each client: bytes in, and the learner trained on it
    assert all(r["bytes_received"] > 0 for r in client1)
    key = "loss/dard" if method == "distill+lada" else "kd/"
    assert all(any(k.startswith(key) or key in k for k in r) for r in client1), client1
