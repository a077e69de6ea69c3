"""The pretrained scenario's one-round smoke run (docs/models.md): Gemma-3-270M server, two SmolLM2 LoRA
clients, across the two tokenizers. Slow (minutes per method on 2 CPU cores); skips, saying what to
install, when a model's package is missing."""

import pytest
from conftest import require_packaged

from fedlada.config import load_config
from fedlada.models.loading import GEMMA3, SMOLLM2
from fedlada.runner import Runner

# the smoke settings printed in docs/models.md ("A pretrained federation")
SMOKE = ["rounds=1", "data.client_train=64", "data.client_test=16", "data.client_heldout=8", "data.public=64",
         "data.server_corpus=64", "data.global_test_per_domain=16", "server.base.steps=20", "clients.0.base.steps=20",
         "clients.1.base.steps=20", "round.local.steps=5", "round.transfer.steps=10", "round.candidates=32",
         "lada.budget=8", "lada.up_budget=4", "round.max_new_tokens=64", "runtime.eval_batch_size=16"]


@pytest.fixture(scope="module", autouse=True)
def _models():
    require_packaged(GEMMA3, SMOLLM2)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["distill+lada", "fedmkt"])
def test_one_smoke_round_runs_across_the_two_tokenizers(method, tmp_path):
    cfg = load_config("scenarios/pretrained", [f"method={method}", *SMOKE])
    assert cfg.server.model.name == GEMMA3 and {c.model.name for c in cfg.clients} == {SMOLLM2}
    rows = Runner(cfg, tmp_path / "run").run()
    seen = {(r["round"], r["participant"]) for r in rows}
    assert seen == {(t, p) for t in (0, 1) for p in ("server", "client-0", "client-1")}
    client1 = [r for r in rows if r["round"] == 1 and r["role"] == "client"]
    assert all(r["bytes_received"] > 0 for r in client1)  # the server's knowledge reached each client
    if method == "fedmkt":
        assert all("kd/kd" in r for r in client1)
        return
    # every filter picked its budget; a client trains only where a pick has a correct server path (a DARD
    # pair), and one with none is left as it was (seen at these counts: the server is at its floor)
    assert all(r["lada/selected"] == 8 for r in client1)
    for r in client1:
        if r.get("dard/pairs", 0) > 0:
            assert r["steps/dard"] >= 1 and "loss/dard" in r
        else:
            assert "steps/dard" not in r and r["lada/heldout_nll_after"] == r["lada/heldout_nll_before"]
