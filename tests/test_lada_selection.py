"""The pieces of LaDa's down-direction change: the oracle bound, both rewards, epochs-sized phases,
the held-out slice and the thin server corpus (each test fails if the rule were wrong)."""

import math

import numpy as np
import pytest
import torch

from fedlada.config import DataConfig, ModelConfig, TrainConfig
from fedlada.data import build_federation_data
from fedlada.filter import make_selector
from fedlada.filter.reward import heldout_alignment_reward, learnability_reward
from fedlada.lada.transfer import own_possible
from fedlada.models import load_model


def test_oracle_picks_own_domain_with_correct_teacher_learner_wrong_first():
    #                 0      1      2      3      4      5      6      7
    own = np.array([True, True, True, False, True, True, False, True])
    ok = np.array([True, True, True, True, False, True, True, True])
    wrong = np.array([False, True, False, True, True, True, False, False])
    nll = np.array([0.9, 0.2, 0.5, 3.0, 2.0, 0.7, 4.0, 0.1])
    sel = make_selector("oracle", 3, seed=0, alpha=0.1)
    x = np.zeros((8, 3))
    aux = dict(own_domain=own, teacher_correct=ok, learner_wrong=wrong, learner_nll=nll)
    # eligible: own and teacher right = 0, 1, 2, 5, 7; learner-wrong first (5: 0.7, 1: 0.2), then by NLL (0, 2, 7)
    assert sel.select(x, 10, aux=aux).indices.tolist() == [5, 1, 0, 2, 7]
    assert sel.select(x, 3, aux=aux).indices.tolist() == [5, 1, 0]  # the budget caps it
    aux["own_domain"] = np.zeros(8, dtype=bool)
    assert sel.select(x, 3, aux=aux).indices.tolist() == []  # nothing of its own: it picks nothing
    with pytest.raises(ValueError, match="oracle"):
        sel.select(x, 3, aux={"learner_nll": nll})
    # what bounds any filter that takes no wrong teacher path: 5 own-domain paths are right (0, 1, 2, 5, 7)
    assert own_possible(own, ok, 10) == pytest.approx(5 / 8)  # the budget is capped by the pool's 8
    assert own_possible(own, ok, 4) == 1.0 and own_possible(own, ok, 0) == 0.0
    assert own_possible(own, ok, 8) == pytest.approx(5 / 8) == len(sel.select(x, 8, aux=dict(aux, own_domain=own)).indices) / 8


def test_nll_drop_reward_on_hand_made_numbers():
    before = np.array([2.0, 1.0, 0.5, 0.0, 1.0])
    after = np.array([1.0, 1.5, 0.25, 0.0, 0.2])
    has = np.array([True, True, True, True, False])
    assert learnability_reward(before, after, has).tolist() == [0.5, 0.0, 0.5, 0.0, 0.0]


def test_heldout_reward_is_the_cosine_and_the_rounds_lowest_without_a_target():
    cos = np.array([0.4, -0.2, 1.3, 0.9, np.nan])
    has = np.array([True, True, True, False, False])
    assert heldout_alignment_reward(cos, has).tolist() == [0.4, -0.2, 1.0, -0.2, -0.2]
    assert heldout_alignment_reward(cos[:2], np.array([False, False])).tolist() == [-1.0, -1.0]


def test_gradient_cosines_match_autograd_per_sample():
    """The credit of each pick: cos(grad of its own loss, direction), checked against per-sample autograd."""
    lm = load_model(ModelConfig(name="tiny-llama-xs"), device="cpu", seed=3)
    prompts, paths = ["12+34=", "5*7=", "90-12="], ["2+4+0=06|1+3+0=04|#### 46", "#### 35", "#### 78"]
    direction = lm.loss_gradient(["11+11="], ["1+1+0=02|1+1+0=02|#### 22"])
    got = lm.gradient_cosines(prompts, paths, direction)
    params = [p for p in lm.model.parameters() if p.requires_grad]
    for i, (p, c) in enumerate(zip(prompts, paths)):
        logp, n = lm.sequence_logprobs([p], [c], grad=True)
        g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(-logp.sum() / n.sum(), params)])
        assert got[i] == pytest.approx(float(torch.nn.functional.cosine_similarity(g, direction, dim=0)), abs=1e-5)
    assert got[0] > 0  # shares the held-out path's format and operation


@pytest.mark.parametrize("epochs, n, steps", [(None, 10, 300), (10, 200, 32), (10, 1200, 188), (30, 1200, 300), (0.5, 1, 1)])
def test_epochs_sized_phases(epochs, n, steps):
    cfg = TrainConfig(steps=300, epochs=epochs, batch_size=64)
    sized = cfg.sized(n)
    assert sized.steps == steps and sized.epochs is None
    if epochs is not None:
        assert steps == min(300, math.ceil(epochs * n / 64))


def test_heldout_slices_and_server_weights_change_no_other_set():
    base = DataConfig(client_domains=[["add"], ["mul"]], client_train=30, client_test=10, public=40, server_corpus=60,
                      global_test_per_domain=5, client_heldout=0,
                      math_mix={"client_digits": (2, 2), "test_digits": (3, 3), "server_digits": (2, 3), "public_digits": (2, 3)})
    plain = build_federation_data(base, 2, seed=4)
    more = build_federation_data(base.model_copy(update={"client_heldout": 12}), 2, seed=4)
    for a, b in zip(plain.clients, more.clients):
        assert [e.prompt for e in a.train] == [e.prompt for e in b.train] and a.heldout == []
        assert len(b.heldout) == 12 and {e.domain for e in b.heldout} == set(b.domains)
        assert {len(e.prompt.split("+")[0].split("*")[0]) for e in b.heldout} == {3}  # the test's digits, not train's
        assert {len(e.prompt.split("+")[0].split("*")[0]) for e in b.train} == {2}
    assert [e.prompt for e in plain.public] == [e.prompt for e in more.public]
    seen = {e.prompt for c in more.clients for e in c.train + c.test} | {e.prompt for e in more.public + more.server_corpus}
    assert not seen & {e.prompt for c in more.clients for e in c.heldout}  # held out: in no other set
    thin = build_federation_data(base.model_copy(update={"server_weights": {"add": 1.0, "sub": 1.0, "mul": 0.2}}), 2, 4)
    counts = {d: sum(e.domain == d for e in thin.server_corpus) for d in ("add", "sub", "mul")}
    assert counts == {"add": 27, "sub": 27, "mul": 6}
    with pytest.raises(ValueError, match="server_weights"):
        build_federation_data(base.model_copy(update={"server_weights": {"div": 1.0}}), 2, 4)


def test_the_lada_package_imports_on_its_own():
    """`from fedlada.lada import with_lada` in a fresh interpreter (lada builds on hosts.base; the registry above both)."""
    import subprocess
    import sys

    code = "from fedlada.lada import with_lada; import fedlada.methods as m; assert 'distill+lada' in m.METHODS"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_heldout_contrast_credits_each_pick_along_the_heldout_minus_pool_direction():
    """`lada.reward=heldout_contrast`: cos(grad of the pick, unit held-out gradient - unit pool gradient), by
    hand; `heldout` is the plain held-out cosine; a pick without a correct path is not measured (cosine 0)."""
    from types import SimpleNamespace

    from fedlada.data.types import Example
    from fedlada.lada.transfer import Pending, Pick, reward_probe

    lm = load_model(ModelConfig(name="tiny-llama-xs"), device="cpu", seed=3)
    held = [Example("h0", "11+11=", "1+1+0=02|1+1+0=02|#### 22", "22", "add")]
    pool = [("5*7=", "#### 35"), ("90-12=", "#### 78"), ("12+34=", "2+4+0=06|1+3+0=04|#### 46")]
    picks = [Pick(f"p{i}", prompt, path, ok, None, False, False, [], 0.0, 0.0, 0.0, 1.0)
             for i, (prompt, path, ok) in enumerate([("12+34=", "2+4+0=06|1+3+0=04|#### 46", True),
                                                     ("5*7=", "#### 35", True), ("9-1=", "#### 8", False)])]
    runtime = SimpleNamespace(eval_batch_size=8)
    learner = SimpleNamespace(lm=lm, heldout=held, name="client-0", cfg=SimpleNamespace(runtime=runtime))
    pending = Pending(1, picks, pool=pool)

    def grad(prompts, paths):
        return lm.loss_gradient(prompts, paths)

    g_held, g_pool = grad(["11+11="], [held[0].solution]), grad([p for p, _ in pool], [c for _, c in pool])
    for kind, direction in (("heldout", g_held), ("heldout_contrast", g_held / g_held.norm() - g_pool / g_pool.norm())):
        probe = reward_probe(kind, learner, pending)
        for j in (0, 1):
            g = grad([picks[j].prompt], [picks[j].path])
            assert probe.cosines[j] == pytest.approx(float(torch.nn.functional.cosine_similarity(g, direction, dim=0)),
                                                     abs=1e-5)
        assert probe.cosines[2] == 0.0
    assert Pending.from_tree(pending.to_tree()) == pending  # the pool sample survives the state round trip
