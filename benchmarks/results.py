"""The quickstart comparison of docs/results.md: methods and ablations over seeds, mean ± std.

    python benchmarks/results.py --seeds 0 1 2 --jobs 2 --out runs/results   # runs what is missing, then prints the table
    python benchmarks/results.py --out runs/results --table-only              # table from finished runs

Each run is a plain `fedlada run` in its own process (`--resume` reuses finished rounds), with
one torch thread per job. Base models are cached per seed and shared by all variants.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fedlada.report import read_rows, summary

VARIANTS = {
    "standalone": ["method=standalone"],
    "distill": ["method=distill"],
    "distill+lada": ["method=distill+lada"],
    "distill+lada, filter=random": ["method=distill+lada", "lada.filter=random"],
    "distill+lada, loss=sft": ["method=distill+lada", "lada.loss=sft"],
}


def run_dir(out: Path, variant: str, seed: int) -> Path:
    slug = variant.replace(", ", "_").replace("=", "-").replace("+", "_")
    return out / f"{slug}-seed{seed}"


def run_one(out: Path, variant: str, seed: int, config: str) -> str:
    d = run_dir(out, variant, seed)
    if (d / "report.md").exists():
        return f"{d.name}: done before"
    sets = [f"--set={s}" for s in (*VARIANTS[variant], f"seed={seed}", "runtime.threads=1")]
    cmd = ["fedlada", "run", config, *sets, "--out", str(d)] + (["--resume"] if d.exists() else [])
    d.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{d}.log", "w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    return f"{d.name}: {'ok' if rc == 0 else f'FAILED ({rc}), see {d}.log'}"


def table(out: Path, seeds: list[int]) -> str:
    def fmt(values):
        values = [100 * v for v in values]
        if not values:
            return "–"
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.1f} ± {sd:.1f}"

    lines = [
        "| method | seeds | client own | client global | server global | client own gain vs round 0 |",
        "|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        sums = [summary(read_rows(run_dir(out, variant, s))) for s in seeds if (run_dir(out, variant, s) / "report.md").exists()]
        lines.append(
            f"| {variant} | {len(sums)} | {fmt([s['client_own'] for s in sums])} | {fmt([s['client_global'] for s in sums])} "
            f"| {fmt([s['server_global'] for s in sums])} | {fmt([s['client_own_gain'] for s in sums])} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/results"))
    ap.add_argument("--config", default="quickstart")
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    if not args.table_only:
        # variant-major: concurrent jobs are different seeds, so no two train the same base models
        jobs = [(v, s) for v in VARIANTS for s in args.seeds]
        with ThreadPoolExecutor(args.jobs) as pool:
            for line in pool.map(lambda vs: run_one(args.out, vs[0], vs[1], args.config), jobs):
                print(line, flush=True, file=sys.stderr)
    print(table(args.out, args.seeds))


if __name__ == "__main__":
    main()
