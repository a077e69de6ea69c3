"""What a Flower deployment costs over the in-process run: `fedlada run` and `fedlada flower local`
on the same config, back to back on the same machine, with the ratio of their wall times.

    python benchmarks/flower_overhead.py                       # quickstart, method=distill+lada
    python benchmarks/flower_overhead.py --set rounds=1 --set round.transfer.steps=20   # a quick look
    python benchmarks/flower_overhead.py --clientapp-per-message   # Flower's default ClientApp per message
    python benchmarks/flower_overhead.py --repeats 2   # in process, Flower, Flower, in process

First (untimed) it runs round 0 alone once, so that both timed runs find the base models in the cache:
otherwise the first run would pay the base training and the second not. Then it times the in-process
run and the Flower run, each a fresh `--out`, and prints both wall times, the ratio, whether the two
runs ended with the same accuracies, and `uptime` before and after (the machine may be shared: a
load above the core count makes both times, and the ratio, noisy). With `--repeats N` it runs N of
each in the order in process, Flower, Flower, in process, ... (so that a machine that speeds up or
slows down over the runs favours neither), and prints every time and the ratio of the sums. The
Flower run prints its round progress on the terminal as it goes. The result is also written to
OUT/flower_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

FEDLADA = str(Path(sys.executable).with_name("fedlada"))


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def timed(argv: list[str]) -> float:
    print("$ " + " ".join(argv), flush=True)
    start = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - start


def accuracies(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {(r["round"], r["participant"], r["split"]): r["accuracy"] for r in rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", nargs="?", default="quickstart")
    p.add_argument("--method", default="distill+lada")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="a config override (repeatable)")
    p.add_argument("--out", type=Path, default=Path("runs/bench-flower-overhead"))
    p.add_argument("--clientapp-per-message", action="store_true", help="Flower's default isolation, for comparison")
    p.add_argument("--repeats", type=int, default=1, help="runs of each kind, interleaved in process/Flower/Flower/...")
    a = p.parse_args()

    sets = [x for s in [f"method={a.method}", *a.overrides] for x in ("--set", s)]
    shutil.rmtree(a.out, ignore_errors=True)
    a.out.mkdir(parents=True)
    print("warm-up (untimed): round 0 alone, so that the base models are cached for both runs", flush=True)
    subprocess.run([FEDLADA, "run", a.config, *sets, "--set", "rounds=0", "--out", str(a.out / "warmup")], check=True,
                   stdout=subprocess.DEVNULL)

    def argv(kind: str, out: Path) -> list[str]:
        if kind == "in-process":
            return [FEDLADA, "run", a.config, *sets, "--out", str(out)]
        return [FEDLADA, "flower", "local", a.config, *sets, "--out", str(out)] + (
            ["--clientapp-per-message"] if a.clientapp_per_message else [])

    load_before = uptime()
    order = [kind for k in range(a.repeats) for kind in (("in-process", "flower-local") if k % 2 == 0 else
                                                         ("flower-local", "in-process"))]
    times: dict[str, list[float]] = {"in-process": [], "flower-local": []}
    runs: list[Path] = []
    for kind in order:
        runs.append(a.out / f"{kind}-{len(times[kind])}")
        times[kind].append(timed(argv(kind, runs[-1])))
    load_after = uptime()

    same = all(accuracies(run) == accuracies(runs[0]) for run in runs)
    in_process, flower = sum(times["in-process"]), sum(times["flower-local"])
    result = {"config": a.config, "method": a.method, "overrides": a.overrides,
              "clientapp_per_message": a.clientapp_per_message, "order": order,
              "in_process_s": [round(t, 1) for t in times["in-process"]],
              "flower_local_s": [round(t, 1) for t in times["flower-local"]],
              "ratio": round(flower / in_process, 3), "same_accuracies": same,
              "uptime_before": load_before, "uptime_after": load_after}
    (a.out / "flower_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(f"uptime before: {load_before}")
    print(f"uptime after:  {load_after}")
    print("in process (fedlada run):   " + ", ".join(f"{t:7.1f} s" for t in times["in-process"]))
    print("fedlada flower local:       " + ", ".join(f"{t:7.1f} s" for t in times["flower-local"]))
    print(f"ratio flower local / in process: {flower / in_process:.2f}" + (" (of the sums)" if a.repeats > 1 else ""))
    print(f"same accuracies in every round: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
