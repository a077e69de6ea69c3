"""The DARD training phase: the shared optimizer/schedule of `fedlada.models`, with the DARD objective.

Pairs come in two kinds. Exchanged pairs (public question; chosen = the other side's correct path,
rejected = the learner's wrong path) use the configured reference: `teacher` — log-probs the other
side computed with its own model and tokenizer —, `self` (the learner frozen at the start of the
phase: plain DPO) or `none`. Local pairs (own question; chosen = gold solution) must never leave
the learner, so under `ref=teacher` they fall back to the frozen learner as reference.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from fedlada.config import LadaConfig, TrainConfig
from fedlada.distill.dard import PathLogps, dard_objective
from fedlada.distill.pairs import contrast_view
from fedlada.models.training import batches, train_steps
from fedlada.seeding import derive_seed

TextPair = tuple[str, str, "str | None"]  # (prompt, chosen, rejected or None for SFT-only)
Ref = tuple[float, int, float, int]  # (chosen logp, chosen tokens, rejected logp, rejected tokens)


def contrast_views(pairs: list[TextPair], contrast: str) -> list[tuple[str, str, str]]:
    """Per pair, `(given, chosen, rejected)` as the contrastive term scores them (`lada.contrast`); an
    SFT-only pair (no rejected path) is scored whole."""
    return [contrast_view(c, r, contrast) if r is not None else ("", c, "") for _, c, r in pairs]


def _frozen_refs(lm, pairs: list[TextPair], contrast: str, batch_size: int = 256) -> list[Ref]:
    prompts, views = [p[0] for p in pairs], contrast_views(pairs, contrast)
    given = [v[0] for v in views]
    c, cn = lm.sequence_logprobs(prompts, [v[1] for v in views], batch_size=batch_size, given=given)
    r, rn = lm.sequence_logprobs(prompts, [v[2] for v in views], batch_size=batch_size, given=given)
    return [(float(a), int(b), float(x), int(y)) for a, b, x, y in zip(c, cn, r, rn)]


def train_dard(lm, pairs: list[TextPair], refs: list[Ref | None] | None, local: list[TextPair], cfg: TrainConfig,
               lada: LadaConfig, *, seed: int, progress: Callable[[], None] | None = None) -> dict[str, float]:
    """`cfg.sized(n).steps` AdamW steps on the DARD objective over exchanged + local pairs; returns the phase's stats.

    `refs[i]` is the teacher reference of `pairs[i]` (None where the pair has no rejected path or
    where the caller has none), computed on `contrast_views(pairs, lada.contrast)`; missing references
    are the frozen learner's, or zeros for `ref=none`. The SFT term always scores the whole chosen path.
    """
    allpairs = list(pairs) + list(local)
    cfg = cfg.sized(len(allpairs))
    if cfg.steps == 0 or not allpairs:
        return {"seconds/dard": 0.0}
    start = time.perf_counter()
    refs = list(refs) if refs is not None else [None] * len(pairs)
    refs += [None] * len(local)
    need = [] if lada.ref == "none" else [i for i, r in enumerate(refs) if r is None or lada.ref == "self"]
    if lada.anchor > 0:
        need = list(range(len(allpairs)))  # the anchor needs the frozen learner on every chosen path
    frozen = dict(zip(need, _frozen_refs(lm, [allpairs[i] for i in need], lada.contrast))) if need else {}
    if lada.ref == "none":
        table = [(0.0, 1, 0.0, 1)] * len(allpairs)
    else:
        table = [frozen[i] if refs[i] is None or lada.ref == "self" else refs[i] for i in range(len(allpairs))]
    anchor_t = None
    if lada.anchor > 0:
        anchor_t = torch.tensor([[frozen[i][0], frozen[i][1]] for i in range(len(allpairs))], dtype=torch.float32,
                                device=lm.device)
    ref_t = torch.tensor([[r[0], r[1], r[2], r[3]] for r in table], dtype=torch.float32, device=lm.device)
    has_rej = torch.tensor([p[2] is not None for p in allpairs], device=lm.device)
    views = contrast_views(allpairs, lada.contrast)
    split = lada.contrast != "path"  # then the contrastive chosen side is not the whole path the SFT term needs

    gen = torch.Generator().manual_seed(derive_seed(seed, "dard-batches"))
    totals: dict[str, float] = {}

    def batch_loss(idx: list[int]) -> torch.Tensor:
        batch = [allpairs[i] for i in idx]
        view = [views[i] for i in idx]
        prompts = [p[0] for p in batch]
        pc, pcn = lm.sequence_logprobs(prompts, [v[1] for v in view], batch_size=len(batch), grad=True,
                                       given=[v[0] for v in view])
        sft = lm.sequence_logprobs(prompts, [p[1] for p in batch], batch_size=len(batch), grad=True) if split else None
        rej = [i for i, p in enumerate(batch) if p[2] is not None]
        pr = torch.zeros_like(pc)
        prn = torch.ones_like(pcn)
        if rej:
            lp, n = lm.sequence_logprobs([prompts[i] for i in rej], [view[i][2] for i in rej], batch_size=len(rej),
                                         grad=True, given=[view[i][0] for i in rej])
            pos = torch.tensor(rej, device=lm.device)
            pr = pr.index_put((pos,), lp)
            prn = prn.index_put((pos,), n)
        r = ref_t[idx]
        loss, stats = dard_objective(
            PathLogps(pc, pcn, pr, prn), PathLogps(r[:, 0], r[:, 1], r[:, 2], r[:, 3]), has_rej[idx],
            beta=lada.beta, lam=lada.lambda_, label_smoothing=lada.label_smoothing,
            length_normalize=lada.length_normalize, anchor=lada.anchor,
            anchor_ref=None if anchor_t is None else (anchor_t[idx, 0], anchor_t[idx, 1]), sft_logps=sft,
        )
        for k, v in stats.items():
            if v == v:  # skip NaN (no contrastive pair in the batch)
                totals[k] = totals.get(k, 0.0) + v
                totals[f"_n_{k}"] = totals.get(f"_n_{k}", 0.0) + 1
        return loss.mean()

    losses = train_steps(lm, cfg, batches(len(allpairs), cfg.batch_size, cfg.steps, gen, full=False), batch_loss,
                         None if progress is None else lambda step, loss: progress())
    totals["loss"] = sum(loss.item() for loss in losses)
    out = {"seconds/dard": time.perf_counter() - start, "loss/dard": totals["loss"] / cfg.steps, "steps/dard": float(cfg.steps),
           "dard/pairs": float(int(has_rej.sum())), "dard/sft_only": float(len(allpairs) - int(has_rej.sum()))}
    for k in ("pref_acc", "margin", "dard", "sft"):
        if totals.get(f"_n_{k}"):
            out[f"dard/{k}"] = totals[k] / totals[f"_n_{k}"]
    return out
