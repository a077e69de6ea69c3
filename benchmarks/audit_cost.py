"""What the privacy audit costs: per round, messages and bytes audited, audit seconds, and their share of
the round's wall time (docs/reliability.md).

    python benchmarks/audit_cost.py                       # quickstart, rounds=1, transfer.steps=20
    python benchmarks/audit_cost.py --set method=distill+lada --set lada.budget=200

The run is an ordinary in-process run (audit on). Its round time is the wall time from the end of one
round's checkpoint to the next (host round, evaluation, checkpoint). Because other work on the machine
inflates both, every encoded message of the run is also kept and audited again, 5 times, afterwards:
the best of those is the audit's own cost on an idle core.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from fedlada.config import load_config
from fedlada.errors import PrivacyViolation
from fedlada.runner import Runner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default="quickstart")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--count-violations", action="store_true",
                        help="measure only: count messages the audit would stop (and deliver them) instead of stopping")
    args = parser.parse_args()
    overrides = ["rounds=1", "round.transfer.steps=20", *args.overrides]
    cfg = load_config(args.config, overrides)
    out = args.out or Path(tempfile.mkdtemp(prefix="audit-cost-"))
    runner = Runner(cfg, out)
    auditor = runner.channel.auditor
    kept: list[tuple[int, bytes]] = []
    check, current = auditor.check, {"round": 0}

    violations: list[str] = []

    def keep(data: bytes, sender: str, receiver: str, owner: str | None = None) -> None:
        kept.append((current["round"], bytes(data), owner))
        try:
            check(data, sender, receiver, owner)
        except PrivacyViolation as err:
            if not args.count_violations:
                raise
            violations.append(str(err).split("; nothing was sent")[0])

    auditor.check = keep
    marks = {-1: time.perf_counter()}

    def on_round(t, rows):
        marks[t] = time.perf_counter()
        current["round"] = t + 1

    rows = runner.run(on_round=on_round)
    auditor.check = check
    server = {r["round"]: r for r in rows if r["participant"] == "server"}
    print(f"{cfg.name} method={cfg.method} overrides={overrides} ({out})")
    print("round  messages        MB  audit s (run)  audit s (idle, best of 5)  round s  audit % of round")
    for t in sorted(server):
        r = server[t]
        batch = [(d, o) for k, d, o in kept if k == t]
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for d, o in batch:
                try:
                    check(d, "bench", "bench", o)
                except PrivacyViolation:
                    pass
            best = min(best, time.perf_counter() - start)
        wall = marks[t] - marks[t - 1]
        print(f"{t:5d}  {int(r['audit/messages']):8d}  {r['audit/bytes'] / 1e6:8.2f}  {r['audit/seconds']:13.3f}  "
              f"{best:25.3f}  {wall:7.1f}  {100 * r['audit/seconds'] / wall:16.3f}")
    if args.count_violations:
        print(f"{len(violations)} message(s) the audit would have stopped" + "".join(f"\n  {v}" for v in violations))


if __name__ == "__main__":
    main()
