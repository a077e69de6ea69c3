"""Does the down filter find each client's own domain in round 2, after one round of rewards?

    python benchmarks/filter_probe.py CONFIG [--set key=value ...] [--seed S] [--out FILE.md] [--dump FILE.npz]

LaDa's EE-Net picks round 1 by k-means (it has no rewards yet) and learns from round 1's rewards which
samples to pick in round 2. This probe runs round 1 of the down direction exactly as `distill+lada` does
(the client handlers of lada/client.py, the server's DARD references), then, on round 2's pool, ranks the
candidates by several selectors trained on the same round-1 picks and rewards, and reports each one's
own-domain share of its top b against the pool's base rate and against what is possible (own-domain
candidates with a correct server path). It isolates the selector from the training that follows it, so
a selector change can be judged in minutes instead of whole runs. Rewards and features are LaDa's
(`lada.reward`, filter/features.py); no local phase runs between the rounds.

Selectors: `eenet` (the run's own state after round 1), a fresh EE-Net without exploration, one on the
six scalar features only (no question embedding), a ridge regression on those (each pool standardized),
and the single features (lowest learner NLL, highest affinity) for reference.
CONFIG is a scenario YAML or a packaged name. Base models come from the cache, else are trained.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reward_probe import build  # noqa: E402  (the same server and clients as the reward probe)

from fedlada.compare import resolve_scenario  # noqa: E402
from fedlada.config import load_config  # noqa: E402
from fedlada.filter.eenet import EENetSelector, pool_scale  # noqa: E402
from fedlada.filter.features import NAMES  # noqa: E402
from fedlada.lada.client import FILTER, down_offered, on_candidates, on_references  # noqa: E402
from fedlada.lada.messages import Candidate, Candidates, References  # noqa: E402
from fedlada.lada.server import offered_candidates, teacher_references  # noqa: E402
from fedlada.lada.transfer import features, selector_for  # noqa: E402
from fedlada.report import markdown_table  # noqa: E402
from fedlada.seeding import derive_seed  # noqa: E402


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def standardize(x: np.ndarray) -> np.ndarray:
    mean, std = pool_scale(x)
    return (x - mean) / std


def eenet_top(seed: int, alpha: float, x1: np.ndarray, rows1: np.ndarray, r1: np.ndarray, x2: np.ndarray,
              budget: int) -> np.ndarray:
    """A fresh EE-Net that saw round 1's pool, learnt the picks' rewards, and now picks from round 2."""
    sel = EENetSelector(x1.shape[1], seed=seed, alpha=alpha)
    sel.select(x1, budget)
    sel.update(x1[rows1], r1)
    return sel.select(x2, budget).indices


def ridge_top(x1: np.ndarray, rows1: np.ndarray, r1: np.ndarray, x2: np.ndarray, budget: int) -> np.ndarray:
    a = np.column_stack([x1[rows1], np.ones(len(rows1))])
    w = np.linalg.solve(a.T @ a + 1.0 * np.eye(a.shape[1]), a.T @ r1)
    return np.argsort(-(np.column_stack([x2, np.ones(len(x2))]) @ w), kind="stable")[:budget]


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a positive outranks a negative), ties half: among picks with a correct server path, since a pick
    without one earns the round's lowest reward whatever its domain."""
    if not len(pos) or not len(neg):
        return float("nan")
    return float(np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])))


def probe_client(client, server, cands1: list[Candidate], cands2: list[Candidate]) -> tuple[list, dict, dict]:
    cfg, budget = client.cfg, client.cfg.lada.budget
    off1 = down_offered(client, cands1)
    phi1 = features(client, off1)  # what `choose` computes inside on_candidates, on the same model
    reply = on_candidates(client, Candidates(1, cands1, False))
    report = on_references(client, References(1, teacher_references(server, reply.needs_reference)))
    row_of = {o.sample_id: i for i, o in enumerate(off1)}
    rows1 = np.array([row_of[p.sample_id] for p in report.picks])
    r1 = np.array([p.reward for p in report.picks])
    own1 = np.array([p.own_domain for p in report.picks])
    ok1 = np.array([p.teacher_correct for p in report.picks])
    auc = _auc(r1[own1 & ok1], r1[~own1 & ok1])

    off2 = down_offered(client, cands2)
    phi2 = features(client, off2)
    own2 = np.array([o.own_domain for o in off2])
    ok2 = np.array([o.path_correct for o in off2])
    seed = derive_seed(cfg.seed, client.name, "filter-probe")
    scal = slice(0, len(NAMES))
    as_run = selector_for(cfg, client.state[FILTER], client.name, FILTER)
    tops = {
        "eenet (the run's state)": as_run.select(phi2, budget).indices,
        "eenet, alpha 0": eenet_top(seed, 0.0, phi1, rows1, r1, phi2, budget),
        "eenet, scalars only": eenet_top(seed, cfg.lada.alpha, phi1[:, scal], rows1, r1, phi2[:, scal], budget),
        "ridge on the scalars": ridge_top(standardize(phi1[:, scal]), rows1, r1, standardize(phi2[:, scal]), budget),
        "lowest learner NLL": np.argsort(phi2[:, 0], kind="stable")[:budget],
        "highest affinity": np.argsort(-phi2[:, 5], kind="stable")[:budget],
    }
    possible = min(budget, int((own2 & ok2).sum())) / budget
    rows = [[name, f"{own2[top].mean():.2f}", f"{(own2[top] & ok2[top]).mean():.2f}", f"{ok2[top].mean():.2f}"]
            for name, top in tops.items()]
    summary = {"base rate": float(own2.mean()), "possible": possible, "round-1 reward AUC own>other (correct paths)": auc,
               "round-1 own share": float(own1.mean())}
    arrays = {"phi1": phi1, "rows1": rows1, "r1": r1, "own1": own1, "ok1": ok1, "phi2": phi2, "own2": own2, "ok2": ok2}
    return rows, summary, arrays


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--dump", type=Path, help="also save each client's round-1 picks and rewards and both pools' "
                    "features (.npz), to try selectors on them offline")
    args = ap.parse_args()
    sets = ["method=distill+lada", f"seed={args.seed}", *args.sets]
    cfg = load_config(resolve_scenario(args.config), sets)
    server, clients = build(cfg)
    cands1, cands2 = offered_candidates(server, 1)[1], offered_candidates(server, 2)[1]
    lines = [f"# Filter probe: {args.config}, seed {args.seed}", "",
             "`python benchmarks/filter_probe.py " + shlex.join([args.config, "--seed", str(args.seed),
                                                                  *(f"--set={s}" for s in args.sets)]) + "`", ""]
    dumped = {}
    for client in clients:
        start = time.perf_counter()
        rows, summary, arrays = probe_client(client, server, cands1, cands2)
        dumped |= {f"{client.name}/{k}": v for k, v in arrays.items()}
        log(f"{client.name}: {time.perf_counter() - start:.0f}s")
        lines += [f"## {client.name} ({', '.join(client.domains)})", "",
                  "; ".join(f"{k} {v:.2f}" for k, v in summary.items()), "",
                  markdown_table(["round-2 selector", "own share", "own with a correct path", "correct path"], rows),
                  ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.dump:
        np.savez(args.dump, **dumped)


if __name__ == "__main__":
    main()
