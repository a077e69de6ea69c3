"""Token-level knowledge distillation with sparse (top-k) soft targets: the transfer loss of the
logit-exchanging hosts, `lm_weight * L_LM + kd_weight * L_KD` (FedMKT: a and 1-a; FedCoLLM: 1 and lambda).

L_LM is the usual per-token NLL of the labels; L_KD the cross-entropy of the learner's distribution
against the target distribution, -sum_v q(v) log p(v), which equals KL(q || p) up to the entropy of q,
a constant of the learner. Both are means over the tokens of a batch; samples without a target
(None) contribute to L_LM only.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from fedlada.config import TrainConfig
from fedlada.distill.align import Sparse
from fedlada.models.training import batches, train_steps
from fedlada.seeding import derive_seed


def kd_losses(logits: torch.Tensor, labels: torch.Tensor, target_ids: torch.Tensor, target_probs: torch.Tensor,
              has_target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(L_LM, L_KD)` over N token positions: logits [N, V], labels [N], sparse targets [N, K] (ids,
    probabilities summing to 1 per row), `has_target` [N] bool. L_KD is 0 when no row has a target."""
    logp = torch.log_softmax(logits.float(), -1)
    lm = -logp.gather(1, labels[:, None]).squeeze(1).mean()
    if not bool(has_target.any()):
        return lm, logp.new_zeros(())
    kd = -(target_probs * logp.gather(1, target_ids)).sum(1)
    return lm, kd[has_target].mean()


def train_kd(lm, prompts: list[str], completions: list[str], targets: list[Sparse | None], cfg: TrainConfig, *,
             lm_weight: float, kd_weight: float, seed: int, progress: Callable[[], None] | None = None) -> dict[str, float]:
    """`cfg.steps` AdamW steps on `lm_weight * L_LM + kd_weight * L_KD`; `targets[i]` must have one row per
    completion token + eos of pair i in the learner's tokenization (what `distill.align.project` gives)."""
    if cfg.steps == 0 or not prompts:
        return {"seconds/kd": 0.0}
    start = time.perf_counter()
    seqs, starts = lm.encode_pairs(prompts, completions)
    width = max((t.ids.shape[1] for t in targets if t is not None), default=1)
    dev = lm.device

    def padded(t: Sparse | None, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids, probs = torch.zeros((n, width), dtype=torch.long), torch.zeros((n, width))
        if t is not None:
            if t.ids.shape[0] != n:
                raise ValueError(f"train_kd: a target has {t.ids.shape[0]} rows for {n} tokens")
            ids[:, : t.ids.shape[1]] = torch.as_tensor(t.ids)
            probs[:, : t.ids.shape[1]] = torch.as_tensor(t.probs, dtype=torch.float32)
        return ids, probs

    tables = [padded(t, len(s) - st) for t, s, st in zip(targets, seqs, starts)]
    gen = torch.Generator().manual_seed(derive_seed(seed, "kd-batches"))
    sums = {"loss/kd": 0.0, "kd/lm": 0.0, "kd/kd": 0.0}

    def batch_loss(idx: list[int]) -> torch.Tensor:
        logits, labels, rows = lm.scored_logits([seqs[i] for i in idx], [starts[i] for i in idx])
        t_ids = torch.cat([tables[i][0] for i in idx]).to(dev)
        t_probs = torch.cat([tables[i][1] for i in idx]).to(dev)
        has = torch.tensor([targets[i] is not None for i in idx], device=dev)[rows]
        l_lm, l_kd = kd_losses(logits, labels, t_ids, t_probs, has)
        loss = lm_weight * l_lm + kd_weight * l_kd
        for key, v in (("loss/kd", loss), ("kd/lm", l_lm), ("kd/kd", l_kd)):
            sums[key] += v.item()
        return loss

    train_steps(lm, cfg, batches(len(seqs), cfg.batch_size, cfg.steps, gen), batch_loss,
                None if progress is None else lambda step, loss: progress())
    return {"seconds/kd": time.perf_counter() - start, **{k: v / cfg.steps for k, v in sums.items()}}
