"""What a scenario can judge: the testbed check (conditions a-d) and the oracle gap, from `collect`'s runs."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Optional

from fedlada.compare.planning import spec_parts
from fedlada.compare.results import Record, stat
from fedlada.report import BY_DOMAIN

LADA_METHOD = "distill+lada"  # the LaDa method whose oracle and random filters bound selection (check b)
TRANSFER_HOST, BASELINE = "distill", "standalone"  # check a: transfer must beat no transfer
EPS = 1e-9  # rounding slack: 100 * (0.6 - 0.5) is 9.999999999999998, and +10.0 must pass a 10-point bar


def _by_seed(results: dict, label: Optional[str]) -> dict[int, dict]:
    entry = results.get(label) if label else None
    return {r["seed"]: r for r in entry["runs"]} if entry else {}


def _own(run: Optional[dict]) -> Optional[float]:
    """A run's final client own accuracy; None when absent or NaN (no client rows)."""
    v = run.get("client_own") if run else None
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def filter_bounds(results: dict, method: str) -> tuple[Optional[str], Optional[str]]:
    """The labels of `method:filter=oracle` and `method:filter=random` (however the key is spelled:
    `filter` or `lada.filter`), each with no other setting; None for one not compared."""
    found: dict[str, str] = {}
    for label in results:
        m, settings = spec_parts(label)
        if m == method and len(settings) == 1 and settings.get("lada.filter") in ("oracle", "random"):
            found.setdefault(settings["lada.filter"], label)
    return found.get("oracle"), found.get("random")


def _paired_own(results: dict, a: Optional[str], b: Optional[str]) -> list[tuple[int, float, float]]:
    """(seed, own of a, own of b) for the seeds where both have a finished run with client rows."""
    ra, rb = _by_seed(results, a), _by_seed(results, b)
    return [(s, _own(ra[s]), _own(rb[s])) for s in sorted(ra) if s in rb and _own(ra[s]) is not None and _own(rb[s]) is not None]


@dataclass(frozen=True, eq=False)
class Recovered(Record):
    values: list[Optional[float]]
    mean: Optional[float]
    std: Optional[float]
    n: int


@dataclass(frozen=True, eq=False)
class OracleGap(Record):
    oracle: str
    random: str
    seeds: list[int]
    gap_points: list[float]
    recovered: dict[str, Recovered]


def oracle_gap(results: dict) -> dict[str, OracleGap]:
    """Per LaDa method M compared with both `M:filter=oracle` and `M:filter=random`: how much of the
    oracle's lead over random selection each other variant of M recovers, per seed,
    (v - random) / (oracle - random) on final client own accuracy (1 = as good as the oracle, 0 = no
    better than chance).

    Why per seed: the bounds move with the seed's base models, so each seed is scaled by its own gap.
    A seed whose gap is <= EPS (the oracle no better than random) cannot scale anything: its value is
    None there, and that seed says the scenario gives selection nothing to find.
    """
    out = {}
    for method in dict.fromkeys(spec_parts(label)[0] for label in results):
        oracle, random = filter_bounds(results, method)
        if not (oracle and random):
            continue
        bounds = _paired_own(results, oracle, random)
        seeds = [s for s, _, _ in bounds]
        gap = {s: o - r for s, o, r in bounds}
        low = {s: r for s, _, r in bounds}
        recovered = {}
        for label in results:
            if label in (oracle, random) or spec_parts(label)[0] != method:
                continue
            runs = _by_seed(results, label)
            values = [(_own(runs[s]) - low[s]) / gap[s] if _own(runs.get(s)) is not None and gap[s] > EPS else None
                      for s in seeds]
            recovered[label] = Recovered(values, **stat(values))
        out[method] = OracleGap(oracle, random, seeds, [100 * gap[s] for s in seeds], recovered)
    return out


def _unmeasured(name: str, why: str) -> dict:
    return {"name": name, "status": "not measured", "why": why, "per_seed": []}


def _verdict(ok: bool) -> str:
    return "pass" if ok else "fail"


def check_transfer_helps(results: dict) -> dict:
    """(a) Transfer helps: `distill` ends above `standalone` (final client own) in every seed, paired by
    seed. Why: where distilling everything does not help, no filter over what to distill can be judged."""
    name = "transfer helps"
    pairs = _paired_own(results, TRANSFER_HOST, BASELINE)
    if not pairs:
        return _unmeasured(name, f"not measured: needs finished runs of `{TRANSFER_HOST}` and `{BASELINE}` of a common seed")
    per_seed = [{"seed": s, TRANSFER_HOST: d, BASELINE: b, "diff_points": 100 * (d - b)} for s, d, b in pairs]
    return {"name": name, "status": _verdict(all(d > b for _, d, b in pairs)), "per_seed": per_seed}


def check_selection_matters(results: dict, method: str = LADA_METHOD, threshold: float = 10.0) -> dict:
    """(b) Selection matters: `method:filter=oracle` minus `method:filter=random`, final client own,
    is at least `threshold` points on average over the seeds. Why: a filter is judged by where it falls
    between those two; a narrow range leaves every filter indistinguishable from noise."""
    name = "selection matters"
    oracle, random = filter_bounds(results, method)
    if not (oracle and random):
        return _unmeasured(name, f"not measured: needs variants `{method}:filter=oracle` and `{method}:filter=random`")
    pairs = _paired_own(results, oracle, random)
    if not pairs:
        return _unmeasured(name, f"not measured: needs finished runs of `{oracle}` and `{random}` of a common seed")
    per_seed = [{"seed": s, "oracle": o, "random": r, "diff_points": 100 * (o - r)} for s, o, r in pairs]
    mean = statistics.fmean(p["diff_points"] for p in per_seed)
    return {"name": name, "status": _verdict(mean >= threshold - EPS), "per_seed": per_seed, "mean_points": mean,
            "threshold_points": threshold, "oracle": oracle, "random": random}


def round_zero_by_seed(results: dict) -> dict[int, tuple[str, dict]]:
    """Per seed, (label, round0) of the first variant with a finished run of that seed. Why any one:
    round 0 (the base models and their evaluation) is shared by every method of a seed."""
    out: dict[int, tuple[str, dict]] = {}
    for label, entry in results.items():
        for r in entry["runs"]:
            if r.get("round0"):
                out.setdefault(r["seed"], (label, r["round0"]))
    return dict(sorted(out.items()))


def check_no_floor_ceiling(zero: dict[int, tuple[str, dict]], low: float = 0.05, high: float = 0.90) -> dict:
    """(c) No floor or ceiling: every client's round-0 own accuracy lies strictly between `low` and
    `high`, in every seed. Why: a client at the floor cannot show what it learnt, one at the ceiling
    has nothing left to learn; either makes its gain meaningless."""
    name = "no floor/ceiling"
    per_seed = []
    for seed, (label, r0) in zero.items():
        own = r0.get("clients_own") or {}
        if own:
            outside = {c: a for c, a in own.items() if not low < a < high}
            per_seed.append({"seed": seed, "from": label, "min": min(own.values()), "max": max(own.values()), "outside": outside})
    if not per_seed:
        return _unmeasured(name, "not measured: needs round-0 client rows (split local_test) of a finished run")
    return {"name": name, "status": _verdict(not any(p["outside"] for p in per_seed)), "per_seed": per_seed,
            "low": low, "high": high}


def _client_domains(config: Optional[dict]) -> Optional[list[list[str]]]:
    return ((config or {}).get("data") or {}).get("client_domains")


def _weakest_domain(domains: list[list[str]], by_domain: dict[str, float]) -> Optional[dict]:
    """The client domain furthest below the server's mean over its other domains (None if no client
    domain has a server accuracy and at least one other domain to compare with)."""
    best = None
    for k, doms in enumerate(domains):
        for d in map(str, doms):
            others = [v for o, v in by_domain.items() if o != d]
            if d not in by_domain or not others:
                continue
            rest = statistics.fmean(others)
            cand = {"domain": d, "client": f"client-{k}", "server_domain": by_domain[d], "server_others": rest,
                    "margin_points": 100 * (rest - by_domain[d])}
            if best is None or cand["margin_points"] > best["margin_points"]:
                best = cand
    return best


def check_server_lacks(zero: dict[int, tuple[str, dict]], configs: dict, margin: float = 20.0) -> dict:
    """(d) The clients know something the server lacks: in every seed, some client domain d (data.client_domains)
    has a round-0 server accuracy at least `margin` points below the server's mean over its other
    domains. Why: without such a domain the up direction has nothing to carry and a client's own
    domain is no different from any other for the server's teaching."""
    name = "clients know what the server lacks"
    if not zero:
        return _unmeasured(name, "not measured: needs a finished run")
    per_seed = []
    for seed, (label, r0) in zero.items():
        domains = _client_domains(configs.get(label))
        if not domains:
            return _unmeasured(name, "not measurable: the config sets no data.client_domains")
        by_domain = r0.get("server_by_domain") or {}
        if not by_domain:
            return _unmeasured(name, f"not measured: needs round-0 server rows with {BY_DOMAIN}<domain> (seed {seed})")
        weakest = _weakest_domain(domains, by_domain)
        if weakest is None:
            return _unmeasured(name, f"not measured: no client domain among the server's per-domain accuracies (seed {seed})")
        per_seed.append({"seed": seed, "from": label, **weakest, "pass": weakest["margin_points"] >= margin - EPS})
    return {"name": name, "status": _verdict(all(p["pass"] for p in per_seed)), "per_seed": per_seed, "margin_points": margin}


def transfer_rule(config: dict) -> str:
    """How a run sized its transfer phases, from its saved config (`round.transfer`)."""
    t = (config.get("round") or {}).get("transfer") or {}
    steps, batch, epochs = t.get("steps"), t.get("batch_size"), t.get("epochs")
    if epochs is not None:
        return f"{epochs:g} epochs, capped at {steps} steps (batch {batch})"
    return f"{steps} steps (batch {batch})"


def _overall(conditions: dict) -> tuple[str, str]:
    by = {st: [k for k, c in conditions.items() if c["status"] == st] for st in ("fail", "pass", "not measured")}
    if not by["fail"] and not by["not measured"]:
        return "pass", f"testbed check: PASS ({min(conditions)}–{max(conditions)})"
    status = "fail" if by["fail"] else "incomplete"
    words = {"fail": "failed", "pass": "passed", "not measured": "not measured"}
    parts = [f"{', '.join(ks)} {words[st]}" for st, ks in by.items() if ks]
    return status, f"testbed check: {status.upper()} ({'; '.join(parts)})"


@dataclass(frozen=True, eq=False)
class Check(Record):
    """The conditions stay dicts: each has numbers of its own (per seed, its bar), which only
    `check_lines` reads."""

    status: str
    line: str
    method: str
    conditions: dict[str, dict]
    transfer: dict[str, str]


def scenario_check(results: dict, configs: dict, method: str = LADA_METHOD) -> Check:
    """Whether this scenario can judge a filter: conditions a-d (each `check_*`), over the finished
    seeds, and the transfer-phase rule of each variant. `results`: `collect`'s output (or hand-made
    runs with seed, client_own and round0); `configs`: {label: the saved config as a dict}."""
    zero = round_zero_by_seed(results)
    conditions = {
        "a": check_transfer_helps(results),
        "b": check_selection_matters(results, method),
        "c": check_no_floor_ceiling(zero),
        "d": check_server_lacks(zero, configs),
    }
    status, line = _overall(conditions)
    return Check(status, line, method, conditions, {label: transfer_rule(cfg) for label, cfg in configs.items()})
