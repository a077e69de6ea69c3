"""EE-Net selector: exact gradients, the f2 target contract, k-means warm start, and learning a
nonlinear reward on a synthetic contextual bandit."""

import numpy as np
import pytest
import torch

from fedlada.filter import GRAD_DIM, EENetSelector, make_selector
from fedlada.filter.eenet import MLP


def torch_copy(net: MLP) -> torch.nn.Sequential:
    h, d = net.W1.shape
    t = torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.ReLU(), torch.nn.Linear(h, 1)).double()
    with torch.no_grad():
        t[0].weight.copy_(torch.tensor(net.W1))
        t[0].bias.copy_(torch.tensor(net.b1))
        t[2].weight.copy_(torch.tensor(net.w2[None]))
        t[2].bias.copy_(torch.tensor(net.b2))
    return t


def autograd_flat(t: torch.nn.Module, loss: torch.Tensor) -> np.ndarray:
    grads = torch.autograd.grad(loss, list(t.parameters()))
    return torch.cat([g.reshape(-1) for g in grads]).numpy()


def test_closed_form_gradients_match_autograd():
    rng = np.random.default_rng(0)
    net = MLP(7, 16, rng)
    x, y = rng.normal(size=(9, 7)), rng.normal(size=9)
    t = torch_copy(net)
    f, per_sample = net.param_grad(x)
    np.testing.assert_allclose(f, t(torch.tensor(x))[:, 0].detach().numpy(), rtol=1e-12)
    for i in range(len(x)):
        expected = autograd_flat(t, t(torch.tensor(x[i : i + 1]))[0, 0])
        np.testing.assert_allclose(per_sample[i], expected, rtol=1e-10, atol=1e-12)
    loss, grad = net.mse_grad(x, y)
    t_loss = torch.nn.functional.mse_loss(t(torch.tensor(x))[:, 0], torch.tensor(y))
    assert loss == pytest.approx(t_loss.item())
    np.testing.assert_allclose(grad, autograd_flat(t, t_loss), rtol=1e-10, atol=1e-12)


def test_explore_net_learns_residual_of_f1_as_it_was_at_selection():
    rng = np.random.default_rng(1)
    sel = EENetSelector(6, seed=0, alpha=0.1, hidden=16)
    for round_ in range(3):
        x = rng.normal(size=(40, 6))
        s = sel.select(x, 5)
        theta_then = sel.state_dict()["f1"]
        r = rng.uniform(size=5)
        sel.update(x[s.indices], r)
        state = sel.state_dict()
        # f2's target is r - f1 with f1 as it scored the rows (not the f1 trained on them)
        np.testing.assert_allclose(state["replay_res"][-5:], r - s.f1, rtol=1e-12)
        assert not np.allclose(state["f1"], theta_then)
        # and its input is f1's parameter gradient at that time, mean-pooled in GRAD_DIM blocks
        net = MLP(6, 16, np.random.default_rng(0))
        net.theta[:] = theta_then
        t = torch_copy(net)
        xs = (x[s.indices] - x.mean(0)) / x.std(0)  # scaled within the pool it was chosen from
        np.testing.assert_allclose(state["replay_x"][-5:], xs, rtol=1e-12)
        for row, g in zip(xs, state["replay_g"][-5:]):
            full = autograd_flat(t, t(torch.tensor(row[None]))[0, 0])
            pooled = [block.mean() for block in np.array_split(full, GRAD_DIM)]
            np.testing.assert_allclose(g, pooled, rtol=1e-10, atol=1e-12)
        if round_ > 0:  # after the k-means round: score f1 + alpha f2, best first
            np.testing.assert_allclose(s.score, s.f1 + 0.1 * s.f2)
            assert (np.diff(s.score) <= 0).all()


def test_kmeans_warm_start_covers_every_cluster():
    rng = np.random.default_rng(3)
    centers = rng.normal(scale=20, size=(5, 6))
    sizes = [80, 50, 30, 20, 10]
    labels = np.repeat(np.arange(5), sizes)
    x = centers[labels] + rng.normal(scale=0.5, size=(len(labels), 6))
    perm = rng.permutation(len(x))
    x, labels = x[perm], labels[perm]
    s = make_selector("eenet", 6, seed=0, alpha=0.1).select(x, 5)
    assert sorted(labels[s.indices].tolist()) == [0, 1, 2, 3, 4]
    assert labels[s.indices].tolist() == [0, 1, 2, 3, 4]  # largest cluster first
    np.testing.assert_allclose(s.score, np.array(sizes) / sum(sizes))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_kmeans_warm_start_picks_distinct_samples_from_duplicates():
    x = np.repeat(np.eye(3), 4, axis=0)  # 3 distinct points, 12 rows
    s = make_selector("eenet", 3, seed=0, alpha=0.1).select(x, 5)
    assert len(set(s.indices.tolist())) == 5


def test_lowest_nll_cold_start_takes_the_prior_then_explores_then_learns():
    """Round 1: three quarters of b are the lowest learner NLLs (not k-means' diverse picks), the last
    quarter explores the rest; once rewards are seen, the nets rank, not the NLL."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 4))
    nll = rng.uniform(0.5, 3.0, size=40)
    sel = make_selector("eenet", 4, seed=0, alpha=0.1, cold_start="lowest_nll")
    first = sel.select(x, 8, aux={"learner_nll": nll})
    assert first.indices[:6].tolist() == np.argsort(nll)[:6].tolist()
    np.testing.assert_allclose(first.score[:6], -np.sort(nll)[:6])
    assert len(set(first.indices.tolist())) == 8 and not set(first.indices[6:]) & set(np.argsort(nll)[:6])
    # reward the rows of highest NLL: the next round follows the reward, not the prior
    sel.update(x[first.indices], np.zeros(8))
    sel.select(x, 40, aux={"learner_nll": nll})
    sel.update(x, (nll > 2.5).astype(float))
    second = sel.select(x, 6, aux={"learner_nll": nll})
    assert nll[second.indices].mean() > nll[first.indices[:6]].mean() + 1.0
    with pytest.raises(ValueError, match="learner_nll"):
        make_selector("eenet", 4, seed=0, alpha=0.1, cold_start="lowest_nll").select(x, 6)


def bandit(kind, seed, rounds=50, pool=200, budget=10):
    """A fresh pool of 200 contexts in R^8 each round; the reward is a bump of a hidden projection,
    exp(-2 (a.x - 1)^2) plus noise, clipped to [0, 1]: nonlinear and non-monotone, so a linear scorer
    (which would chase the largest a.x, where the reward is ~0) does worse than random."""
    rng = np.random.default_rng(1000 + seed)
    a = rng.normal(size=8)
    a /= np.linalg.norm(a)
    sel = make_selector(kind, 8, seed=seed, alpha=0.1)
    total, regret = 0.0, []
    for _ in range(rounds):
        x = rng.normal(size=(pool, 8))
        mean_r = np.exp(-2 * (x @ a - 1.0) ** 2)
        s = sel.select(x, budget)
        r = np.clip(mean_r[s.indices] + rng.normal(scale=0.05, size=budget), 0, 1)
        sel.update(x[s.indices], r)
        total += r.sum()
        regret.append(np.sort(mean_r)[-budget:].sum() - mean_r[s.indices].sum())
    return total, np.array(regret)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eenet_learns_a_nonlinear_reward(seed):
    ee_total, ee_regret = bandit("eenet", seed)
    rand_total, rand_regret = bandit("random", seed)
    # measured on 8 seeds: ratio 2.66-3.09, second-half / first-half regret 0.07-0.16
    assert ee_total > 2.0 * rand_total
    # sublinear regret: the per-round regret of rounds 26-50 is a fraction of that of rounds 1-25,
    # while random's stays flat
    assert ee_regret[25:].mean() < 0.35 * ee_regret[:25].mean()
    assert rand_regret[25:].mean() > 0.8 * rand_regret[:25].mean()


def test_features_are_scaled_within_each_pool():
    """A pool shifted and stretched per feature (as the learner's NLLs move between rounds) is ranked
    exactly as the original: each select scales by its own pool, and the picks are replayed as scaled."""
    rng = np.random.default_rng(4)
    first, second = rng.normal(size=(40, 3)), rng.normal(size=(30, 3))
    shift, stretch = np.array([5.0, -2.0, 0.5]), np.array([3.0, 0.2, 10.0])
    rewards = rng.uniform(size=4)
    picks = []
    for later in (second, second * stretch + shift):
        sel = make_selector("eenet", 3, seed=0, alpha=0.1)
        s = sel.select(first, 4)
        sel.update(first[s.indices], rewards)
        picks.append(sel.select(later, 5).indices)
        state = sel.state_dict()
        np.testing.assert_allclose(state["pool_mean"], later.mean(0), rtol=1e-12)
        np.testing.assert_allclose(state["pool_std"], later.std(0), rtol=1e-12)
        np.testing.assert_allclose(state["replay_x"], (first[s.indices] - first.mean(0)) / first.std(0), rtol=1e-12)
    np.testing.assert_array_equal(picks[0], picks[1])


def test_nets_read_only_the_leading_columns_when_told():
    """With `net_inputs=2` the nets score a pool by its first two columns only: replacing every later
    column (the question embedding) leaves the learned ranking unchanged, while k-means, the cold start,
    still reads them; the replay keeps only what the nets read, and state round-trips."""
    rng = np.random.default_rng(5)
    first, later = rng.normal(size=(40, 5)), rng.normal(size=(30, 5))
    noisy = later.copy()
    noisy[:, 2:] = rng.normal(scale=50.0, size=(30, 3))
    rewards = rng.uniform(size=6)
    sel = make_selector("eenet", 5, seed=0, alpha=0.1, net_inputs=2)
    cold = sel.select(first, 6).indices
    sel.update(first[cold], rewards)
    state = sel.state_dict()
    assert state["replay_x"].shape == (6, 2) and sel.f1.W1.shape[1] == 2
    ranked = [make_selector("eenet", 5, seed=0, alpha=0.1, net_inputs=2) for _ in range(2)]
    for r in ranked:
        r.load_state_dict(state)
    np.testing.assert_array_equal(ranked[0].select(later, 8).indices, ranked[1].select(noisy, 8).indices)
    blind = first.copy()
    blind[:, 2:] = rng.normal(scale=50.0, size=(40, 3))
    assert set(make_selector("eenet", 5, seed=0, alpha=0.1, net_inputs=2).select(blind, 6).indices) != set(cold)
    with pytest.raises(ValueError, match="net_inputs"):
        make_selector("eenet", 5, seed=0, alpha=0.1, net_inputs=6)
