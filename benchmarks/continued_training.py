"""What one transfer phase does to a converged base model when the data is perfect.

Every host trains its models again after round 0 with `round.transfer` (a fresh AdamW, warmup, cosine).
This script isolates that recipe from the data: each base model (from the run's cache, trained if
missing) continues on gold worked solutions drawn from its *own* training set — data it already
fits — for each (learning rate, steps) given, and the script prints the accuracy before and after,
side by side. A drop here is the recipe's, not any method's.

    python benchmarks/continued_training.py [--scenario standard] [--lr 3e-3 3e-4] [--steps 20 120] \
        [--samples 300] [--set key=value ...]

The server is scored on the global test, the clients on their own tests.
"""

from __future__ import annotations

import argparse
import copy

import torch

from fedlada.compare import resolve_scenario
from fedlada.config import load_config
from fedlada.data import build_federation_data
from fedlada.federation.participants import Client, Server, torch_device
from fedlada.config import default_cache_dir
from fedlada.models import train_sft
from fedlada.progress import UI
from fedlada.seeding import derive_seed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="standard", help="packaged scenario name or YAML path")
    ap.add_argument("--lr", type=float, nargs="+", default=[3e-3, 1e-3, 3e-4])
    ap.add_argument("--steps", type=int, nargs="+", default=[20, 120])
    ap.add_argument("--samples", type=int, default=300, help="own gold examples trained on (the size of a round's pool)")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    args = ap.parse_args()
    cfg = load_config(str(resolve_scenario(args.scenario)), args.overrides)
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    data = build_federation_data(cfg.data, len(cfg.clients), cfg.seed)
    kw = dict(device=torch_device(cfg.runtime.device), cache_dir=default_cache_dir(cfg), ui=UI())
    parts = [(Server(cfg, data.server_corpus, data.public, data.global_test, **kw), data.global_test, "global")]
    parts += [(Client(i, cfg, c.train, c.test, data.global_test, **kw), c.test, "own") for i, c in enumerate(data.clients)]
    base_steps = {p.name: p.participant_cfg.base.steps for p, _, _ in parts}
    print(f"scenario {args.scenario}, seed {cfg.seed}, batch {cfg.round.transfer.batch_size}, "
          f"{args.samples} own gold examples; accuracy % (base -> after)")
    header = "".join(f" | lr {lr:g}, {s} steps" for lr in args.lr for s in args.steps)
    print(f"| participant (base steps) | test | base{header} |")
    print("|---|---|---" + "|---" * (len(args.lr) * len(args.steps)) + "|")
    for part, test, split in parts:
        part.prepare()
        base = part.lm
        row = [f"{100 * part.accuracy(test)[0]:.1f}"]
        ex = part.train[: args.samples]
        for lr in args.lr:
            for steps in args.steps:
                part.lm = copy.deepcopy(base)
                tc = cfg.round.transfer.model_copy(update={"lr": lr, "steps": steps})
                train_sft(part.lm, [e.prompt for e in ex], [e.solution for e in ex], tc,
                          seed=derive_seed(cfg.seed, part.name, "continued"))
                row.append(f"{100 * part.accuracy(test)[0]:.1f}")
        print(f"| {part.name} ({base_steps[part.name]}) | {split} | " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
