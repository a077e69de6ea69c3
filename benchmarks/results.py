"""The quickstart comparison of docs/results.md: methods and ablations over seeds, mean ± std.

    python benchmarks/results.py --seeds 0 1 2 --jobs 2 --out runs/results   # runs what is missing, then prints the table
    python benchmarks/results.py --out runs/results --table-only              # table from finished runs

A thin wrapper over `fedlada.compare` (the engine of `fedlada compare`) for variants that are more
than a method (ablations as extra overrides). Each run is a plain `fedlada run` in its own process,
cpu_count/jobs torch threads each; finished runs are reused, base models are cached per seed and
shared by all variants. Also writes OUT/compare.md, compare.json and compare_accuracy.png.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from fedlada.compare import Variant, compare, stats_grid
from fedlada.config import ConfigError
from fedlada.report import markdown_table

VARIANTS = [
    Variant("standalone", ("method=standalone",)),
    Variant("distill", ("method=distill",)),
    Variant("distill+lada", ("method=distill+lada",)),
    Variant("distill+lada, filter=random", ("method=distill+lada", "lada.filter=random")),
    Variant("distill+lada, loss=sft", ("method=distill+lada", "lada.loss=sft")),
]


def run_dir(out: Path, variant: Variant, seed: int) -> Path:
    """This script's historical layout (OUT/distill_lada-seed0), so earlier runs are reused."""
    slug = variant.label.replace(", ", "_").replace("=", "-").replace("+", "_")
    return out / f"{slug}-seed{seed}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/results"))
    ap.add_argument("--config", default="quickstart")
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    line = shlex.join(["python", "benchmarks/results.py", "--seeds", *map(str, args.seeds), "--jobs", str(args.jobs),
                       "--out", str(args.out), "--config", args.config])
    try:
        result = compare(args.config, VARIANTS, args.seeds, n_jobs=args.jobs, out=args.out, command_line=line,
                         report_only=args.table_only, layout=run_dir)
    except ConfigError as err:
        sys.exit(f"error: {err}")
    print(markdown_table(*stats_grid(result.data["stats"])))
    if result.failed:
        sys.exit(f"{len(result.failed)} run(s) failed: " + "; ".join(o.message for o in result.failed))


if __name__ == "__main__":
    main()
