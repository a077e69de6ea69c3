"""Many SuperNodes on one machine: `fedlada flower simulate --supernodes N` with N tiny clients
(Dirichlet partition over the math-mix operations, `distill+lada`), its wall time and peak memory.

    python benchmarks/flower_scale.py                  # 32 SuperNodes, 2 rounds
    python benchmarks/flower_scale.py --supernodes 8 --rounds 1

Writes the config it runs to OUT/config.yaml. Memory is sampled every 0.5 s over the whole process
tree of the command (the SuperLink, Flower's simulation process, Ray's processes and workers):
the peak of the sum of the processes' PSS (proportional set size: a page shared by k processes
counts 1/k in each, so the sum is what the tree holds) and of their RSS (shared pages counted in
every process that maps them), with the number of processes at that moment. Prints `uptime`
before and after: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

FEDLADA = str(Path(sys.executable).with_name("fedlada"))


def config(n: int, rounds: int, cache: Path) -> dict:
    base = {"steps": 30, "batch_size": 16, "lr": 3e-3}
    models = ["tiny-llama-xs", "tiny-gpt2-s"]
    return {
        "name": f"scale{n}",
        "seed": 0,
        "method": "distill+lada",
        "rounds": rounds,
        "data": {
            "source": "math-mix",
            "domains": ["add", "sub", "mul"],
            "partition": "dirichlet",
            "dirichlet_alpha": 0.5,
            "client_train": 40,
            "client_test": 12,
            "client_heldout": 8,
            "public": 120,
            "server_corpus": 60,
            "global_test_per_domain": 8,
            "math_mix": {"client_digits": [2, 2], "server_digits": [2, 3], "public_digits": [2, 3], "test_digits": [2, 3]},
        },
        "server": {"model": {"name": "tiny-llama-xs"}, "base": base},
        "clients": [{"model": {"name": models[k % 2]}, "base": base} for k in range(n)],
        "round": {"local": {"steps": 5, "batch_size": 16}, "transfer": {"steps": 5, "batch_size": 16},
                  "candidates": 20, "max_new_tokens": 40},
        "lada": {"budget": 8, "up_budget": 4},
        "runtime": {"device": "cpu", "threads": 1, "eval_batch_size": 64, "cache_dir": str(cache)},
    }


def _tree(pid: int) -> list[int]:
    from fedlada.federation.flower.launch import _descendants

    return [pid, *_descendants(pid)]


def _kib(pid: int, path: str, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class Sampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.every, self.stop = pid, every, threading.Event()
        self.peak_pss = self.peak_rss = self.procs_at_peak = self.max_procs = 0

    def run(self) -> None:
        while not self.stop.is_set():
            pids = _tree(self.pid)
            pss = sum(_kib(p, "smaps_rollup", "Pss") for p in pids)
            rss = sum(_kib(p, "status", "VmRSS") for p in pids)
            if pss > self.peak_pss:
                self.peak_pss, self.procs_at_peak = pss, len(pids)
            self.peak_rss = max(self.peak_rss, rss)
            self.max_procs = max(self.max_procs, len(pids))
            self.stop.wait(self.every)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--supernodes", type=int, default=32)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("runs/bench-flower-scale"))
    a = p.parse_args()

    shutil.rmtree(a.out, ignore_errors=True)
    a.out.mkdir(parents=True)
    cfg_path = a.out / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config(a.supernodes, a.rounds, a.out / "cache")))
    load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    argv = [FEDLADA, "flower", "simulate", str(cfg_path), "--supernodes", str(a.supernodes), "--out", str(a.out / "run")]
    print("$ " + " ".join(argv), flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(argv)
    sampler = Sampler(proc.pid)
    sampler.start()
    code = proc.wait()
    wall = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    load_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    rows = [json.loads(x) for x in (a.out / "run" / "metrics.jsonl").read_text().splitlines() if x.strip()] if code == 0 else []
    result = {"supernodes": a.supernodes, "rounds": a.rounds, "exit_code": code, "wall_s": round(wall, 1),
              "rounds_done": sorted({r["round"] for r in rows}),
              "clients_evaluated_last_round": len({r["participant"] for r in rows if r["round"] == a.rounds} - {"server"}),
              "peak_pss_mib": round(sampler.peak_pss / 1024), "peak_rss_sum_mib": round(sampler.peak_rss / 1024),
              "processes_at_peak_pss": sampler.procs_at_peak, "max_processes": sampler.max_procs,
              "uptime_before": load_before, "uptime_after": load_after}
    (a.out / "flower_scale.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    sys.exit(code)


if __name__ == "__main__":
    main()
