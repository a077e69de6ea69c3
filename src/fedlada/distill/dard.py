"""Domain adaptive reasoning distillation (DARD, LaDa paper arXiv 2602.18749): a DPO-style contrastive loss over whole
reasoning paths, plus an SFT anchor on the preferred path.

Why sequence log-probabilities: `log p(y|x) = sum_t log p(y_t | x, y_<t)` is the probability of the
same text under each model's own tokenizer, so a client and the server compare paths without any
vocabulary alignment. Why contrastive: SFT pulls the learner toward the teacher's exact wording; the
preference term only asks it to rank the correct path above its own wrong one, relative to a
reference, which transfers *which reasoning is right* while leaving the learner's own style alone.

Everything here takes already-computed per-example log-prob sums and token counts, so it is
independent of models, tokenizers and which side (client or server) is learning.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def dard_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Per-example sigmoid DPO loss (Rafailov et al. 2023; conservative DPO for `label_smoothing`):
    `m = (pc - pr) - (rc - rr)`, `loss = -logsigmoid(beta m) (1 - eps) - logsigmoid(-beta m) eps`.

    This is TRL's sigmoid DPO per example (TRL then averages). `ref=self` passes the frozen learner's
    log-probs, `ref=teacher` the teacher's, and reference-free DARD (`ref=none`) passes zeros, which
    turns the margin into the learner's own preference `pc - pr`.
    """
    margin = (policy_chosen_logps - policy_rejected_logps) - (ref_chosen_logps - ref_rejected_logps)
    return -F.logsigmoid(beta * margin) * (1 - label_smoothing) - F.logsigmoid(-beta * margin) * label_smoothing


@dataclass
class PathLogps:
    """Summed completion log-probs and completion token counts of a batch of (chosen, rejected) paths
    under one model. Counts travel with the sums because the policy and a teacher reference count
    tokens with different tokenizers."""

    chosen: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected: torch.Tensor
    rejected_tokens: torch.Tensor


def dard_objective(
    policy: PathLogps,
    ref: PathLogps | None,
    has_rejected: torch.Tensor,
    *,
    beta: float,
    lam: float,
    label_smoothing: float = 0.0,
    length_normalize: bool = False,
    anchor: float = 0.0,
    anchor_ref: tuple[torch.Tensor, torch.Tensor] | None = None,
    sft_logps: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """`L = dard_loss + lam * NLL(y+) / |y+|` per example (LaDa's DARD), and training statistics.

    - `anchor` > 0 (a remedy, DPO-Positive of Pal et al. 2024): the margin loses
      `anchor * max(0, log pi0(y+) - log pi(y+))`, with `anchor_ref = (log pi0(y+), tokens)` the frozen
      learner at the start of the phase, so the preference can no longer be won by lowering the
      preferred path together with the rejected one (what a shared-prefix drop does). Same units as
      the margin (per token under `length_normalize`).

    - `has_rejected[i]` False marks an SFT-only pair (`Pair.rejected is None`): its rejected entries
      may hold anything (zeros, NaN) and only the SFT term counts for it. Placeholders are replaced
      before any arithmetic, so a NaN placeholder cannot leak into the gradient.
    - `ref=None` is reference-free DARD (zeros for the reference).
    - `sft_logps = (log pi(y+), tokens)` of the whole chosen path, where `policy.chosen` scores only a
      part of it (`lada.contrast=divergence`); default `policy.chosen`.
    - `length_normalize` divides each of pc, pr, rc, rr by its own token count, making the margin a
      per-token log-ratio. Measured here: summed margins of 133-230 nats on the client's own wrong
      paths, where `-logsigmoid(beta m)` is ~0 and the contrastive gradient vanishes; per-token margins
      stay O(1), so beta can be chosen where the loss still has slope (SimPO-like scales: beta ~1-10).
    - The SFT term is always per token, so `lam` means the same whatever the path lengths.

    Statistics (over pairs with a rejected path; NaN when there are none): `pref_acc` = fraction with
    margin > 0, `margin` = mean margin (in the units the loss used), `dard` = mean contrastive term;
    `sft` = mean per-token NLL of the chosen path over all examples; `pairs` = number of contrastive
    pairs.
    """
    mask = has_rejected.bool()
    zero = torch.zeros_like(policy.chosen)
    ref = ref or PathLogps(zero, torch.ones_like(zero), zero, torch.ones_like(zero))

    def clean(logps: torch.Tensor, tokens: torch.Tensor, rejected: bool) -> torch.Tensor:
        if rejected:
            logps, tokens = torch.where(mask, logps, 0.0), torch.where(mask, tokens, 1)
        return logps / tokens if length_normalize else logps

    pc = clean(policy.chosen, policy.chosen_tokens, False)
    pr = clean(policy.rejected, policy.rejected_tokens, True)
    rc = clean(ref.chosen, ref.chosen_tokens, False)
    rr = clean(ref.rejected, ref.rejected_tokens, True)
    if anchor > 0:
        if anchor_ref is None:
            raise ValueError("anchor > 0 needs anchor_ref: the frozen learner's log-probs of the chosen paths")
        drop = (clean(*anchor_ref, False) - pc).clamp(min=0)
        rc = rc + anchor * drop  # margin - anchor * drop, through the reference side of the margin
    contrastive = torch.where(mask, dard_loss(pc, pr, rc, rr, beta, label_smoothing), 0.0)
    sft_lp, sft_tokens = sft_logps if sft_logps is not None else (policy.chosen, policy.chosen_tokens)
    sft = -sft_lp / sft_tokens
    loss = contrastive + lam * sft

    with torch.no_grad():
        n_pairs = int(mask.sum())
        margin = ((pc - pr) - (rc - rr))[mask]
        nan = float("nan")
        stats = {
            "pref_acc": float((margin > 0).float().mean()) if n_pairs else nan,
            "margin": float(margin.mean()) if n_pairs else nan,
            "dard": float(contrastive[mask].mean()) if n_pairs else nan,
            "sft": float(sft.mean()),
            "pairs": n_pairs,
        }
    return loss, stats
