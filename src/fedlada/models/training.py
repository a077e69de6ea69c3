"""The one training loop every trainer shares (`train_steps`), its optimizer and batches, and supervised
fine-tuning on (prompt, completion) pairs. SFT, DARD (`distill/trainer.py`) and FedMKT's KD
(`distill/kd.py`) each supply only their loss on a batch.

Each call builds a fresh optimizer: federated rounds reset optimizer state anyway, checkpoints then hold
weights only, and a resumed run is exactly the uninterrupted one. Batches come from an epoch-wise
shuffled stream (every example once per epoch, batches cross epoch boundaries so all are full) drawn
from a generator seeded by `seed` alone, so training is bit-reproducible on the CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from functools import partial

import torch

from fedlada.config import TrainConfig
from fedlada.models.lm import LM
from fedlada.seeding import derive_seed

GRAD_CLIP = 1.0
FINAL_LR_FRACTION = 0.1


def lr_factor(step: int, *, steps: int, warmup: float) -> float:
    """Learning-rate multiplier: linear warmup over `warmup * steps` steps, then cosine down to 0.1."""
    warm = round(warmup * steps)
    if step < warm:
        return (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, steps - warm))
    return FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(lm: LM, cfg: TrainConfig) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (betas 0.9/0.98) over the trainable parameters, and its `lr_factor` schedule.

    Weight decay applies to matrices only: decaying norm gains and biases toward zero only hurts.
    """
    params = [p for p in lm.model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, partial(lr_factor, steps=cfg.steps, warmup=cfg.warmup))


def batches(n: int, size: int, steps: int, gen: torch.Generator, *, full: bool = True) -> Iterator[list[int]]:
    """`steps` batches of indices into n items from an epoch-wise shuffled stream: every item once per
    epoch. `full`: batches cross epoch boundaries so that every one has `size` items; else, with fewer
    than `size` items, each batch is one whole epoch (what DARD's phases use)."""
    pool: list[int] = []
    need = size if full else min(size, n)
    for _ in range(steps):
        while len(pool) < need:
            pool += torch.randperm(n, generator=gen).tolist()
        yield pool[:size]
        del pool[:size]


def train_steps(lm: LM, cfg: TrainConfig, batch_indices: Iterator[list[int]],
                batch_loss: Callable[[list[int]], torch.Tensor],
                progress: Callable[[int, torch.Tensor], None] | None = None) -> list[torch.Tensor]:
    """The training loop: per batch, `batch_loss(indices)` (a scalar), backward, gradient clipping at
    GRAD_CLIP, an AdamW step on the `lr_factor` schedule; the model is in train mode only inside.
    Returns each step's (detached) loss; `progress(step, loss)` is called after every step."""
    opt, sched = make_optimizer(lm, cfg)
    params = [p for group in opt.param_groups for p in group["params"]]
    losses = []
    lm.model.train()
    try:
        for step, idx in enumerate(batch_indices):
            loss = batch_loss(idx)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.detach())
            if progress is not None:
                progress(step, loss)
    finally:
        lm.model.eval()
    return losses


def train_sft(lm: LM, prompts: list[str], completions: list[str], cfg: TrainConfig, *, seed: int,
              progress: Callable[[int, float], None] | None = None) -> dict:
    """`cfg.steps` steps minimising the mean per-token NLL of completion tokens (+ eos) given prompts.

    Returns `loss_first` (first step), `loss_last` (mean over the last 10% of steps), `steps`, `seconds`
    and `tokens` (completion tokens trained on, repeats counted). `progress(step, loss)` is called after
    every step. The pairs are tokenized once, up front; the loss comes from the same masking code as
    `LM.sequence_logprobs`.
    """
    if cfg.steps == 0:
        return {"loss_first": None, "loss_last": None, "steps": 0, "seconds": 0.0, "tokens": 0}
    if not prompts:
        raise ValueError("train_sft: no training pairs")
    seqs, starts = lm.encode_pairs(prompts, completions)
    gen = torch.Generator().manual_seed(derive_seed(seed, "sft-batches"))
    tokens = []

    def batch_loss(idx: list[int]) -> torch.Tensor:
        sums, counts = lm.encoded_logprobs([seqs[i] for i in idx], [starts[i] for i in idx])
        tokens.append(counts.sum())
        return -sums.sum() / tokens[-1]

    begin = time.perf_counter()
    losses = train_steps(lm, cfg, batches(len(seqs), cfg.batch_size, cfg.steps, gen), batch_loss,
                         None if progress is None else lambda step, loss: progress(step, loss.item()))
    losses_cpu = torch.stack(losses).cpu()
    tail = max(1, len(losses) // 10)
    return {
        "loss_first": losses_cpu[0].item(),
        "loss_last": losses_cpu[-tail:].mean().item(),
        "steps": len(losses),
        "seconds": time.perf_counter() - begin,
        "tokens": int(torch.stack(tokens).sum()),
    }
