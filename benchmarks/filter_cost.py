"""Share of a LaDa round's wall time spent in the filter, from a finished run directory.

    python benchmarks/filter_cost.py runs/quickstart-distill+lada-seed0

Per round: EE-Net select + update (all clients' down filters, plus the server's up filters), the
feature computation (scoring the candidates with the learner, question embeddings) and the
round's wall time (host local step, exchange and training; evaluation excluded).
"""

import sys
from pathlib import Path

from fedlada.report import read_rows


def main(run_dir: Path) -> None:
    rows = [r for r in read_rows(run_dir) if r["round"] > 0 and r["split"] == "global_test"]
    print(f"{'round':>5} {'round s':>8} {'filter s':>9} {'filter %':>9} {'features s':>11} {'features %':>11}")
    for t in sorted({r["round"] for r in rows}):
        at = [r for r in rows if r["round"] == t]
        wall = next(r["seconds/round"] for r in at if r["participant"] == "server")
        filt = sum(r.get("seconds/filter", 0.0) + r.get("seconds/filter_update", 0.0) for r in at)
        feats = sum(r.get("seconds/features", 0.0) for r in at)
        print(f"{t:>5} {wall:>8.1f} {filt:>9.2f} {100 * filt / wall:>8.2f}% {feats:>11.2f} {100 * feats / wall:>10.2f}%")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
