"""What the server learns from in LaDa's up direction, and what it loses, for one finished run.

    python benchmarks/up_direction.py RUN_DIR [RUN_DIR ...]

For each run of a host whose server learns (`fedmkt+lada`, `standalone+lada`, ...), prints per round
how many samples the up filters picked, their longest operand (math-mix prompts), and on how many
the server's own path was already correct; then the server's global-test accuracy by longest
operand at round 0 (the cached base model) and after the last round (the run's checkpoint), side
by side. Runs of other methods print only the accuracy rows. Uses the run's own config and cache.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import torch

from fedlada.config import load_config
from fedlada.data import build_federation_data
from fedlada.eval import evaluate
from fedlada.federation.participants import Server, torch_device
from fedlada.config import default_cache_dir
from fedlada.models.lm import LM
from fedlada.progress import UI


def longest_operand(prompt: str) -> int:
    return max((len(n) for n in re.findall(r"\d+", prompt)), default=0)


def by_length(lm, examples, cfg) -> dict[int, float]:
    res = evaluate(lm, examples, max_new_tokens=cfg.round.max_new_tokens, batch_size=cfg.runtime.eval_batch_size)
    hits = defaultdict(list)
    for e, ok in zip(examples, res.correct):
        hits[longest_operand(e.prompt)].append(ok)
    return {d: 100 * sum(v) / len(v) for d, v in sorted(hits.items())} | {0: 100 * res.accuracy}


def report(run: Path) -> None:
    cfg = load_config(str(run / "config.yaml"), [])
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    data = build_federation_data(cfg.data, len(cfg.clients), cfg.seed)
    prompt = {e.id: e.prompt for e in data.public}
    print(f"## {run} ({cfg.method}, seed {cfg.seed})")
    sel_path = run / "selections.jsonl"
    rows = [json.loads(line) for line in sel_path.read_text().splitlines()] if sel_path.exists() else []
    for t in sorted({r["round"] for r in rows if r["direction"] == "up"}):
        up = [r for r in rows if r["direction"] == "up" and r["round"] == t]
        lengths = Counter(longest_operand(prompt[r["sample_id"]]) for r in up)
        solved = sum(r["learner_correct"] for r in up)
        print(f"round {t}: {len(up)} up picks; longest operand {dict(sorted(lengths.items()))}; "
              f"server already right on {solved}")
    server = Server(cfg, data.server_corpus, data.public, data.global_test, device=torch_device("cpu"),
                    cache_dir=default_cache_dir(cfg), ui=UI())
    server.prepare()
    final = sorted((run / "checkpoints").glob("round-*"), key=lambda p: int(p.name.split("-")[1]))[-1]
    rows = {"round 0": by_length(server.lm, data.global_test, cfg),
            final.name: by_length(LM.load(final / "server" / "model", device=torch_device("cpu")), data.global_test, cfg)}
    lengths = [d for d in next(iter(rows.values())) if d]
    print("| server, global test | all | " + " | ".join(f"{d}-digit" for d in lengths) + " |")
    print("|---|---|" + "---|" * len(lengths))
    for name, acc in rows.items():
        print(f"| {name} | {acc[0]:.1f} | " + " | ".join(f"{acc[d]:.1f}" for d in lengths) + " |")
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+")
    for run in ap.parse_args().runs:
        report(run)


if __name__ == "__main__":
    main()
