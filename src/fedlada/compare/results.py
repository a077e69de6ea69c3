"""The numbers of a comparison: what each finished run measured, and their statistics over seeds.

A run is kept as the mapping compare.json holds for it (`run_values` plus seed, dir and wall_seconds),
so the statistics below read runs from `collect`, from a compare.json or made by hand alike. The
statistics are `Record`s.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, fields
from typing import Any, Optional

import yaml

from fedlada.compare.planning import Job, spec_parts
from fedlada.compare.schedule import wall_seconds
from fedlada.report import BY_DOMAIN, mean_accuracy, read_rows, summary


class Record:
    """A typed result that also reads as the dict compare.json holds for it: its fields, in order, by key.
    Why: compare.json and the callers that index results by key (`stats["client_own"]["mean"]`) keep the
    keys they had, and a record equals the dict of its fields. Subclasses are
    `@dataclass(frozen=True, eq=False)`: a dataclass `__eq__` would only equal its own class."""

    def keys(self) -> list[str]:
        return [f.name for f in fields(self)]

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (dict, Record)):
            return NotImplemented
        return dict(self) == dict(other)


@dataclass(frozen=True, eq=False)
class Stat(Record):
    mean: Optional[float]
    std: Optional[float]
    n: int


def stat(values: list[Optional[float]]) -> Stat:
    """Mean and sample standard deviation (ddof=1; None with fewer than two values) over seeds."""
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return Stat(None, None, 0)
    return Stat(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None, len(vals))


def bytes_by_round(rows: list[dict]) -> dict[int, int]:
    """Total bytes exchanged per round: every message counted once, by its sender (rows repeat a
    participant's bytes on each of its splits, so each participant is counted once per round)."""
    per = {}
    for r in rows:
        per[(r["round"], r["participant"])] = r.get("bytes_sent", 0)
    out: dict[int, int] = {}
    for (t, _), b in per.items():
        out[t] = out.get(t, 0) + b
    return dict(sorted(out.items()))


def round_zero(rows: list[dict]) -> dict:
    """What the testbed check needs of round 0: each client's own-test accuracy and the server's
    accuracy per domain (the `accuracy_by_domain/<domain>` extras of its rows; {} in older runs)."""
    zero = [r for r in rows if r["round"] == 0]
    by_domain: dict[str, float] = {}
    for r in zero:
        if r["role"] == "server":
            for k, v in r.items():
                if k.startswith(BY_DOMAIN) and v is not None:
                    by_domain.setdefault(k.removeprefix(BY_DOMAIN), v)
    own = {r["participant"]: r["accuracy"] for r in zero if r["role"] == "client" and r["split"] == "local_test"}
    return {"clients_own": own, "server_by_domain": by_domain}


def server_by_domain(rows: list[dict], round_: int) -> dict[str, float]:
    """The server's global-test accuracy per domain in one round ({} in runs without it)."""
    row = next((r for r in rows if r["round"] == round_ and r["role"] == "server" and r["split"] == "global_test"), {})
    return {k.removeprefix(BY_DOMAIN): v for k, v in sorted(row.items()) if k.startswith(BY_DOMAIN) and v is not None}


def run_values(rows: list[dict]) -> dict:
    """The numbers compare aggregates, from one run's metrics rows."""
    s = summary(rows)
    rounds = sorted({r["round"] for r in rows})
    by_round = bytes_by_round(rows)
    exchange = [b for t, b in by_round.items() if t >= 1]
    clients = list(dict.fromkeys(r["participant"] for r in rows if r["role"] == "client"))
    last = s["rounds"]
    own = {(r["participant"]): r["accuracy"] for r in rows if r["round"] == last and r["split"] == "local_test" and r["role"] == "client"}
    return {
        "server_by_domain": server_by_domain(rows, last),
        "final_round": last,
        "client_own": s["client_own"],
        "client_global": s["client_global"],
        "server_global": s["server_global"],
        "gain_own": s["client_own_gain"],
        "gain_global": s["client_global_gain"],
        "bytes_per_round": sum(exchange) / len(exchange) if exchange else None,
        "bytes_by_round": [by_round.get(t, 0) for t in rounds],
        "clients_own": {c: own[c] for c in clients if c in own},
        "own_shares": own_shares(rows),
        "round0": round_zero(rows),
        "per_round": {
            "round": rounds,
            "client_own": [mean_accuracy(rows, t, "client", "local_test") for t in rounds],
            "client_global": [mean_accuracy(rows, t, "client", "global_test") for t in rounds],
            "server_global": [mean_accuracy(rows, t, "server", "global_test") for t in rounds],
        },
    }


def own_shares(rows: list[dict]) -> list[dict]:
    """LaDa's down picks per (client, round): the share from the client's own domains, that share in
    the candidate pool and the highest share with no wrong teacher path (`lada/own_share`,
    `lada/own_base_rate`, `lada/own_possible`: None in runs from before it was logged); empty for runs
    without a filter."""
    seen = {}
    for r in rows:
        if r["role"] == "client" and "lada/own_share" in r:
            seen[(r["participant"], r["round"])] = {"client": r["participant"], "round": r["round"],
                                                    "share": r["lada/own_share"], "base": r["lada/own_base_rate"],
                                                    "possible": r.get("lada/own_possible")}
    return list(seen.values())


@dataclass(frozen=True, eq=False)
class SeedOwnShare(Record):
    """One seed's (client, round) cells from round 2 on: the cell lowest against its base rate (its client,
    round, share and base: the bases differ by client, since each client's pool is the candidates with a
    correct teacher path), how many cells reach twice their base, and the lowest share / possible."""

    seed: int
    min_ratio: float
    client: str
    round: int
    share: float
    base: float
    reached: int
    cells: int
    of_possible: Optional[float] = None  # the lowest share / possible share over the cells (None: not logged)


def own_share_summary(results: dict, from_round: int = 2, factor: float = 2.0) -> dict[str, list[SeedOwnShare]]:
    """Per LaDa variant and seed, from `from_round` on: the (client, round) cell with the lowest own-domain
    share as a multiple of its pool's base rate, and how many cells reach `factor` times theirs. Why the
    lowest: the bar a domain-adaptive filter must clear is for every client, not on average."""
    out = {}
    for label, entry in results.items():
        per_seed = []
        for run in entry["runs"]:
            cells = [c for c in run.get("own_shares", []) if c["round"] >= from_round and c["base"] > 0]
            if cells:
                ratios = [c["share"] / c["base"] for c in cells]
                worst = cells[ratios.index(min(ratios))]
                of_possible = [c["share"] / c["possible"] for c in cells if c.get("possible")]
                per_seed.append(SeedOwnShare(run["seed"], min(ratios), worst["client"], worst["round"], worst["share"],
                                             worst["base"], sum(x >= factor for x in ratios), len(cells),
                                             min(of_possible) if len(of_possible) == len(cells) else None))
        if per_seed:
            out[label] = per_seed
    return out


STAT_KEYS = ("client_own", "client_global", "server_global", "gain_own", "gain_global", "bytes_per_round", "wall_seconds")


@dataclass(frozen=True, eq=False)
class MethodStats(Record):
    client_own: Stat
    client_global: Stat
    server_global: Stat
    gain_own: Stat
    gain_global: Stat
    bytes_per_round: Stat
    wall_seconds: Stat
    n: int
    clients_own: dict[str, Stat]


def aggregate(runs: list[dict]) -> MethodStats:
    """Per-method stats over that method's finished runs (each a `run_values` dict plus wall_seconds)."""
    clients = list(dict.fromkeys(c for r in runs for c in r["clients_own"]))
    return MethodStats(**{k: stat([r.get(k) for r in runs]) for k in STAT_KEYS}, n=len(runs),
                       clients_own={c: stat([r["clients_own"].get(c) for r in runs]) for c in clients})


def collect(jobs: list[Job]) -> dict:
    """Read every finished job: {label: {"runs": [...], "missing": [...]}} in job order."""
    out: dict[str, dict] = {}
    for job in jobs:
        entry = out.setdefault(job.variant.label, {"runs": [], "missing": []})
        if job.state() != "done":
            entry["missing"].append({"seed": job.seed, "dir": str(job.dir), "state": job.state()})
            continue
        values = run_values(read_rows(job.dir))
        entry["runs"].append({"seed": job.seed, "dir": str(job.dir), "wall_seconds": wall_seconds(job.dir), **values})
    return out


def saved_configs(jobs: list[Job]) -> dict[str, dict]:
    """Per variant, the config its runs used: a saved config.yaml where one exists, else the planned one."""
    out: dict[str, Optional[dict]] = {j.variant.label: None for j in jobs}
    for job in jobs:
        path = job.dir / "config.yaml"
        if out[job.variant.label] is None and path.exists():
            out[job.variant.label] = yaml.safe_load(path.read_text()) or {}
    for job in jobs:
        if out[job.variant.label] is None:
            out[job.variant.label] = job.cfg.model_dump(mode="json", by_alias=True)
    return out


PAIRED_KEYS = (("client_own", "client own"), ("client_global", "client global"), ("server_global", "server"))


def host_of(label: str, labels) -> Optional[str]:
    """The host variant a LaDa variant is measured against: for method `X+lada` (plain or with
    ablations), the plain `X`; where the variant also sets non-LaDa keys (`round.transfer.epochs=...`)
    and `X` with just those settings is compared, that one, so the pair differs only in LaDa."""
    method, settings = spec_parts(label)
    if not method.endswith("+lada"):
        return None
    host = method.removesuffix("+lada")
    shared = {k: v for k, v in settings.items() if not k.startswith("lada.")}
    if shared:
        for other in labels:
            if spec_parts(other) == (host, shared):
                return other
    return host if host in labels else None


@dataclass(frozen=True, eq=False)
class Paired(Record):
    diffs: list[float]
    mean: Optional[float]
    std: Optional[float]
    n: int
    verdict: Optional[str]


@dataclass(frozen=True, eq=False)
class LadaVsHost(Record):
    host: str
    seeds: list[int]
    client_own: Paired
    client_global: Paired
    server_global: Paired
    server_by_domain: dict[str, Paired]


def lada_vs_host(results: dict) -> dict[str, LadaVsHost]:
    """Every `X+lada` variant (ablations too) minus its host `X` (`host_of`), paired by seed.

    Why paired: the seeds' round-0 models differ far more than the methods do, so the spread of the
    per-seed difference, not the spread of each method's mean, says whether LaDa's effect is real.
    Per metric: the differences (points, by seed), their mean and sample std, and `lower`/`higher`
    when every seed agrees in sign (else `mixed`; `equal` when all are zero).
    """
    out = {}
    for label, entry in results.items():
        host = host_of(label, results)
        if host is None:
            continue
        base = {r["seed"]: r for r in results[host]["runs"]}
        runs = [(base[r["seed"]], r) for r in entry["runs"] if r["seed"] in base]
        if not runs:
            continue
        metrics = {key: _paired([100 * (r[key] - h[key]) for h, r in runs if r[key] is not None and h[key] is not None])
                   for key, _ in PAIRED_KEYS}
        by_seed = [(h.get("server_by_domain", {}), r.get("server_by_domain", {})) for h, r in runs]
        domains = sorted({d for h, r in by_seed for d in h if d in r})
        by_domain = {d: _paired([100 * (r[d] - h[d]) for h, r in by_seed if d in h and d in r])  # the seeds with d
                     for d in domains}
        out[label] = LadaVsHost(host, [r["seed"] for _, r in runs], **metrics, server_by_domain=by_domain)
    return out


def _paired(diffs: list[float]) -> Paired:
    """Per-seed differences with their mean, std and verdict (`lower`/`higher` only when every seed agrees)."""
    signs = {(d > 1e-9) - (d < -1e-9) for d in diffs}
    verdict = {frozenset({-1}): "lower", frozenset({1}): "higher", frozenset({0}): "equal"}.get(frozenset(signs), "mixed")
    return Paired(diffs, **stat(diffs), verdict=verdict if diffs else None)
