"""DARD loss and objective against independently written formulas and hand values."""

import math

import numpy as np
import pytest
import torch

from fedlada.distill import PathLogps, dard_loss, dard_objective


def reference_dpo(pc, pr, rc, rr, beta, eps):
    """TRL's sigmoid DPO per example, in plain numpy: -log(sigma(x)) = log(1 + e^-x)."""
    m = (pc - pr) - (rc - rr)
    return np.logaddexp(0, -beta * m) * (1 - eps) + np.logaddexp(0, beta * m) * eps


def random_logps(n, seed):
    rng = np.random.default_rng(seed)
    return [-rng.uniform(2, 60, n) for _ in range(4)]


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_dard_loss_equals_sigmoid_dpo(eps):
    pc, pr, rc, rr = random_logps(64, seed=1)
    got = dard_loss(*(torch.tensor(a) for a in (pc, pr, rc, rr)), beta=0.1, label_smoothing=eps)
    np.testing.assert_allclose(got.numpy(), reference_dpo(pc, pr, rc, rr, 0.1, eps), rtol=1e-12, atol=1e-12)


def test_dard_loss_hand_value():
    t = torch.tensor
    loss = dard_loss(t([-1.0]), t([-3.0]), t([-2.0]), t([-2.0]), beta=0.5)  # m = 2, beta m = 1
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-7)


def test_descent_raises_chosen_and_lowers_rejected():
    beta = 0.5
    pc = torch.tensor([-1.0], requires_grad=True)
    pr = torch.tensor([-3.0], requires_grad=True)
    dard_loss(pc, pr, torch.tensor([-2.0]), torch.tensor([-2.0]), beta=beta).sum().backward()
    sig = 1 / (1 + math.exp(beta * 2))  # sigma(-beta m)
    assert pc.grad.item() == pytest.approx(-beta * sig) and pc.grad.item() < 0
    assert pr.grad.item() == pytest.approx(beta * sig) and pr.grad.item() > 0


def _batch(seed, n=32, rejected=None):
    rng = np.random.default_rng(seed)
    pc, pr, rc, rr = (torch.tensor(a) for a in random_logps(n, seed))
    tok = [torch.tensor(rng.integers(3, 40, n)) for _ in range(4)]
    policy = PathLogps(pc, tok[0], pr, tok[1])
    ref = PathLogps(rc, tok[2], rr, tok[3])
    mask = torch.ones(n, dtype=torch.bool) if rejected is None else rejected
    return policy, ref, mask


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_objective_with_self_ref_no_sft_no_norm_is_trl_dpo(eps):
    policy, ref, mask = _batch(2)
    loss, stats = dard_objective(policy, ref, mask, beta=0.1, lam=0.0, label_smoothing=eps)
    expected = reference_dpo(*(a.numpy() for a in (policy.chosen, policy.rejected, ref.chosen, ref.rejected)), 0.1, eps)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-12, atol=1e-12)
    m = (policy.chosen - policy.rejected - ref.chosen + ref.rejected).numpy()
    assert stats["pref_acc"] == pytest.approx((m > 0).mean())
    assert stats["margin"] == pytest.approx(m.mean())
    assert stats["dard"] == pytest.approx(expected.mean())
    assert stats["pairs"] == 32


def test_reference_free_is_zero_reference():
    policy, _, mask = _batch(3)
    loss, _ = dard_objective(policy, None, mask, beta=0.2, lam=0.0)
    expected = reference_dpo(policy.chosen.numpy(), policy.rejected.numpy(), 0.0, 0.0, 0.2, 0.0)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-12)


def test_length_normalisation_hand_value():
    t = torch.tensor
    policy = PathLogps(t([-10.0]), t([5]), t([-30.0]), t([10]))  # -2, -3 per token
    ref = PathLogps(t([-8.0]), t([4]), t([-6.0]), t([3]))  # -2, -2 per token
    loss, stats = dard_objective(policy, ref, t([True]), beta=1.0, lam=0.0, length_normalize=True)
    assert stats["margin"] == pytest.approx(1.0)  # summed margin would be 18
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)))


def test_sft_term_is_lambda_times_per_token_nll():
    policy, ref, mask = _batch(4)
    for norm in (False, True):
        base, _ = dard_objective(policy, ref, mask, beta=0.1, lam=0.0, length_normalize=norm)
        with_sft, stats = dard_objective(policy, ref, mask, beta=0.1, lam=0.7, length_normalize=norm)
        per_token_nll = -policy.chosen / policy.chosen_tokens
        torch.testing.assert_close(with_sft - base, 0.7 * per_token_nll)
        assert stats["sft"] == pytest.approx(per_token_nll.mean().item())


def test_sft_term_scores_the_whole_chosen_path_when_the_contrast_scores_a_part():
    policy, ref, mask = _batch(4)
    whole = (policy.chosen - 5.0, policy.chosen_tokens + 3)  # the chosen paths with their given steps
    base, _ = dard_objective(policy, ref, mask, beta=0.1, lam=0.0, length_normalize=True)
    split, stats = dard_objective(policy, ref, mask, beta=0.1, lam=0.7, length_normalize=True, sft_logps=whole)
    torch.testing.assert_close(split - base, 0.7 * -whole[0] / whole[1])
    assert stats["sft"] == pytest.approx((-whole[0] / whole[1]).mean().item())


def test_sft_only_rows_ignore_nan_placeholders():
    mask = torch.tensor([True, False, True, False])
    policy, ref, _ = _batch(5, n=4)
    nan = torch.tensor([0.0, float("nan"), 0.0, float("nan")])
    policy = PathLogps(policy.chosen.clone().requires_grad_(), policy.chosen_tokens,
                       (policy.rejected + nan).requires_grad_(), policy.rejected_tokens * torch.tensor([1, 0, 1, 0]))
    ref = PathLogps(ref.chosen, ref.chosen_tokens, ref.rejected + nan, ref.rejected_tokens)
    loss, stats = dard_objective(policy, ref, mask, beta=0.1, lam=0.5, length_normalize=True)
    sft = -policy.chosen / policy.chosen_tokens
    torch.testing.assert_close(loss[~mask], 0.5 * sft[~mask])
    assert torch.isfinite(loss).all() and stats["pairs"] == 2
    loss.sum().backward()
    assert torch.isfinite(policy.chosen.grad).all() and torch.isfinite(policy.rejected.grad).all()
    assert (policy.rejected.grad[~mask] == 0).all()


def test_no_pairs_gives_nan_pair_stats():
    policy, ref, _ = _batch(6, n=3)
    _, stats = dard_objective(policy, ref, torch.zeros(3, dtype=torch.bool), beta=0.1, lam=1.0)
    assert stats["pairs"] == 0 and math.isnan(stats["pref_acc"]) and math.isnan(stats["margin"])


def test_anchor_subtracts_the_chosen_paths_drop_below_the_frozen_learner():
    """DPO-Positive on hand-made numbers: pair 0 lowered its chosen path by 3 nats below the frozen
    learner (margin 2 - 0.5 * 3 = 0.5), pair 1 raised it (no penalty, margin 2)."""
    t = torch.tensor
    policy = PathLogps(t([-5.0, -1.0]), t([1, 1]), t([-7.0, -3.0]), t([1, 1]))
    ref = PathLogps(t([0.0, 0.0]), t([1, 1]), t([0.0, 0.0]), t([1, 1]))
    frozen = (t([-2.0, -2.0]), t([1, 1]))
    mask = t([True, True])
    loss, _ = dard_objective(policy, ref, mask, beta=1.0, lam=0.0, anchor=0.5, anchor_ref=frozen)
    expected = [-math.log(1 / (1 + math.exp(-m))) for m in (0.5, 2.0)]
    assert loss.tolist() == pytest.approx(expected)
    plain, _ = dard_objective(policy, ref, mask, beta=1.0, lam=0.0)
    assert plain.tolist() == pytest.approx([-math.log(1 / (1 + math.exp(-2.0)))] * 2)
    with pytest.raises(ValueError, match="anchor_ref"):
        dard_objective(policy, ref, mask, beta=1.0, lam=0.0, anchor=0.5)
