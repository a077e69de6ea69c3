"""Worked solutions vs answer-only targets at an equal number of optimizer steps (quickstart models).

Trains each quickstart participant twice from the same initialisation and data — once on the
digit-level worked solutions, once on `#### N` alone — with the quickstart's base-training budget,
and prints own-test and global-test accuracy side by side.

    python benchmarks/worked_vs_answer.py [--set key=value ...]
"""

from __future__ import annotations

import argparse
import time

import torch

from fedlada.config import load_config
from fedlada.data import build_federation_data
from fedlada.eval import evaluate
from fedlada.models import load_model, train_sft
from fedlada.seeding import derive_seed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    args = ap.parse_args()
    cfg = load_config("quickstart", args.overrides)
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    data = build_federation_data(cfg.data, len(cfg.clients), cfg.seed)
    parts = [("server", cfg.server, data.server_corpus, data.global_test)]
    parts += [(f"client-{i}", p, c.train, c.test) for i, (p, c) in enumerate(zip(cfg.clients, data.clients))]
    print(f"{'participant':<10} {'model':<20} {'steps':>5} {'target':<12} {'own':>6} {'global':>7} {'seconds':>8}")
    for name, participant_cfg, train, own in parts:
        for target in ("worked", "answer-only"):
            lm = load_model(participant_cfg.model, seed=derive_seed(cfg.seed, name, "init"))
            completions = [e.solution if target == "worked" else f"#### {e.answer}" for e in train]
            start = time.perf_counter()
            train_sft(lm, [e.prompt for e in train], completions, participant_cfg.base, seed=derive_seed(cfg.seed, name, "base"))
            seconds = time.perf_counter() - start
            kw = dict(max_new_tokens=cfg.round.max_new_tokens, batch_size=cfg.runtime.eval_batch_size)
            acc_own = evaluate(lm, own, **kw).accuracy
            acc_global = evaluate(lm, data.global_test, **kw).accuracy
            print(f"{name:<10} {participant_cfg.model.name:<20} {participant_cfg.base.steps:>5} {target:<12} {100 * acc_own:>5.1f}% {100 * acc_global:>6.1f}% {seconds:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
