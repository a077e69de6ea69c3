"""Which of the filter's features let the EE-Net find each client's own domain in round 2?

    python benchmarks/filter_features.py DUMP.npz [DUMP.npz ...] [--inits N] [--out FILE.md]

Each DUMP is what `benchmarks/filter_probe.py ... --dump DUMP.npz` saved: per client, round 1's pool
features, picks and rewards, and round 2's pool features with each candidate's domain. For each feature
set, a fresh EE-Net (the run's settings: alpha, width, steps) sees round 1's pool, learns the picks'
rewards, and picks the budget from round 2's pool, once per initialisation seed. A (client, seed) cell
passes when its own-domain share reaches twice the pool's base rate (or every own-domain candidate
there is, where fewer exist). The picks and rewards are round 1's as the run made them (k-means over
every feature), so this isolates what the nets read from what the first round picked. Seconds, not a run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fedlada.config import LadaConfig
from fedlada.filter.eenet import EENetSelector
from fedlada.filter.features import NAMES
from fedlada.report import markdown_table


def feature_sets(n_cols: int) -> dict[str, list[int]]:
    """Column subsets of filter/features.py's layout: the six scalars, then the embedding."""
    scalars = list(range(len(NAMES)))
    return {
        "every feature (the default)": list(range(n_cols)),
        "scalars only (`lada.net_features=scalars`)": scalars,
        "scalars without affinity": [i for i in scalars if NAMES[i] != "affinity"],
        "learner NLL only": [NAMES.index("learner_nll")],
        "affinity and embedding only": [NAMES.index("affinity"), *range(len(NAMES), n_cols)],
    }


def round2_share(d, client: str, cols: list[int], seed: int, alpha: float) -> float:
    """Own-domain share of a fresh EE-Net's round-2 picks after learning round 1's rewards; the budget is
    round 1's number of picks."""
    phi1, rows1, r1 = d[f"{client}/phi1"][:, cols], d[f"{client}/rows1"], d[f"{client}/r1"]
    sel = EENetSelector(len(cols), seed=seed, alpha=alpha)
    sel.select(phi1, len(rows1))
    sel.update(phi1[rows1], r1)
    picks = sel.select(d[f"{client}/phi2"][:, cols], len(rows1)).indices
    return float(d[f"{client}/own2"][picks].mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dumps", nargs="+", type=Path)
    ap.add_argument("--inits", type=int, default=5, help="initialisation seeds per (client, feature set)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    alpha = LadaConfig().alpha  # the packaged scenarios keep the default
    ratios: dict[str, list[float]] = {}
    per_dump = []
    for path in args.dumps:
        d = np.load(path)
        for client in sorted({k.split("/")[0] for k in d.files}):
            own2, budget = d[f"{client}/own2"], len(d[f"{client}/rows1"])
            target = min(2 * own2.mean(), own2.sum() / budget)
            row = [path.stem, client, f"{own2.mean():.2f}"]
            sets = feature_sets(d[f"{client}/phi1"].shape[1])
            for name, cols in sets.items():
                shares = [round2_share(d, client, cols, s, alpha) for s in range(args.inits)]
                ratios.setdefault(name, []).extend(s / target for s in shares)
                row.append(f"{np.mean(shares):.2f} ({min(shares):.2f})")
            per_dump.append(row)
    summary = [[name, f"{sum(r >= 1 for r in v)}/{len(v)}", f"{min(v):.2f}", f"{np.mean(v):.2f}"]
               for name, v in ratios.items()]
    text = "\n".join([
        markdown_table(["nets read", "cells at 2x base", "lowest share / 2x base", "mean share / 2x base"], summary), "",
        f"Round-2 own-domain share, mean over {args.inits} initialisations (lowest in brackets):", "",
        markdown_table(["dump", "client", "base rate", *ratios], per_dump), "",
    ])
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
