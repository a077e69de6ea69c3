"""Compare methods over seeds on one scenario: run every (method, seed) as its own `fedlada run`
process, J at a time, then aggregate the finished runs into compare.md, compare.json and a plot.

A variant is a method spec, `METHOD[:key=value]...` (`distill+lada:filter=oracle`; a key without a
dot is a LaDa setting), so ablations are compared like methods.

Layout: `OUT/VARIANT/seed-S/` (VARIANT: the method's name, or a filesystem-safe slug of the spec) is
a plain run directory (config.yaml, metrics.jsonl, report.md) plus `log.txt` (the run's output),
`attempts.json` (wall seconds and exit code of every process that worked on it) and, once it has
finished, `done.json`. Finished runs are reused; an
unfinished one with metrics is continued with `fedlada run --out DIR --resume`.

Runs are scheduled method-major (for method: for seed), so concurrent jobs are different seeds,
and the later methods of a seed wait until its first run has prepared (and cached) the seed's
base models, which every method of that seed shares.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import yaml

from fedlada.config import PACKAGED_CONFIGS, ConfigError, RunConfig, config_from_dict, load_config
from fedlada.methods import METHODS
from fedlada.report import BY_DOMAIN, markdown_table, mean_accuracy, read_rows, summary

SCENARIOS = PACKAGED_CONFIGS / "scenarios"
DONE, ATTEMPTS, LOG = "done.json", "attempts.json", "log.txt"
RESERVED = ("method", "seed")  # set per run by compare; a --set of these would be ambiguous


def _finished_round(d: Path) -> int:
    """The last round in a run directory's metrics.jsonl; -1 if none."""
    try:
        return max((r["round"] for r in read_rows(d)), default=-1)
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return -1


# -- scenarios and plan ---------------------------------------------------------------------------
def available_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIOS.glob("*.yaml"))


def resolve_scenario(name: str) -> Path:
    """A packaged scenario name (`standard` = configs/scenarios/standard.yaml) or a YAML path."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path.resolve()
    for root in (SCENARIOS, PACKAGED_CONFIGS):  # a scenario, else any packaged config (`quickstart`)
        packaged = root / f"{name.removesuffix('.yaml')}.yaml"
        if packaged.is_file():
            return packaged
    if path.is_file():
        return path.resolve()
    known = ", ".join(available_scenarios()) or "none packaged"
    raise ConfigError(f"--scenario {name!r}: no such YAML file or packaged scenario ({known})")


def scenario_label(name: str) -> str:
    return Path(name).stem if name.endswith((".yaml", ".yml")) else name


SAFE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-")


def split_spec(spec: str) -> tuple[str, list[tuple[str, str]]]:
    """`METHOD[:key=value]...` -> (METHOD, [(key, value)] as given, spaces stripped). Values cannot hold
    ':' (the separator) nor ',' (which separates the specs of --methods).

    Raises ConfigError (one line) for an empty method, a part without `=`, or a key given twice."""
    method, *parts = (p.strip() for p in spec.split(":"))
    if not method:
        raise ConfigError(f"--methods {spec!r}: expected METHOD[:key=value]..., e.g. distill+lada:filter=oracle")
    pairs: list[tuple[str, str]] = []
    for part in parts:
        key, eq, value = (x.strip() for x in part.partition("="))
        if not eq or not key:
            raise ConfigError(f"--methods {spec!r}: {part!r} is not key=value")
        if config_key(key) in {config_key(k) for k, _ in pairs}:
            raise ConfigError(f"--methods {spec!r}: {config_key(key)} is set twice")
        pairs.append((key, value))
    return method, pairs


def config_key(key: str) -> str:
    """A spec key as a config path: a key without a dot is a LaDa setting (`filter` = `lada.filter`)."""
    return key if "." in key else f"lada.{key}"


def spec_parts(label: str) -> tuple[str, dict[str, str]]:
    """A variant label read back as (method, {config path: value}); a label that is no valid spec
    (a hand-named variant) is a method of its own name with no settings."""
    try:
        method, pairs = split_spec(label)
    except ConfigError:
        return label, {}
    return method, {config_key(k): v for k, v in pairs}


def spec_slug(label: str) -> str:
    """A directory name for a spec: ':' -> '_', '=' -> '-', any other unsafe character -> '-'. Why the
    hash in that last case: once different characters map to one, two specs could share a directory."""
    mapped = label.replace(":", "_").replace("=", "-")
    safe = "".join(ch if ch in SAFE_CHARS else "-" for ch in mapped)
    if safe != mapped:
        safe += "-" + hashlib.sha1(label.encode()).hexdigest()[:8]
    return safe


@dataclass(frozen=True)
class Variant:
    """One compared column: a label and the overrides that make it (for `compare`: a method spec)."""

    label: str
    overrides: tuple[str, ...]
    slug: str = ""

    @property
    def dirname(self) -> str:
        return self.slug or self.label

    @classmethod
    def method(cls, name: str) -> Variant:
        return cls(name, (f"method={name}",))

    @classmethod
    def parse(cls, spec: str) -> Variant:
        """`METHOD[:key=value]...`, e.g. `distill+lada:filter=oracle`, `distill:round.transfer.epochs=null`.

        Label: the spec, spaces stripped. A plain method keeps its name as its directory, so the runs
        of earlier comparisons are reused; a spec with settings gets `spec_slug`. Whether a key exists is
        left to load_config (in `plan`), which names it in its usual one-line error."""
        method, pairs = split_spec(spec)
        if not pairs:
            return cls.method(method)
        label = ":".join([method, *(f"{k}={v}" for k, v in pairs)])
        return cls(label, (f"method={method}", *(f"{config_key(k)}={v}" for k, v in pairs)), spec_slug(label))


@dataclass
class Job:
    variant: Variant
    seed: int
    dir: Path
    cfg: RunConfig
    scenario: Path  # the YAML a fresh start runs
    sets: list[str]  # its --set list

    @property
    def name(self) -> str:
        return f"{self.variant.label} seed {self.seed}"

    def state(self) -> str:
        """done (done.json, or metrics up to the last round) | partial (continue with --resume) | new."""
        if (self.dir / DONE).exists() or _finished_round(self.dir) == self.cfg.rounds:
            return "done"
        has = (self.dir / "metrics.jsonl").exists() and (self.dir / "config.yaml").exists()
        return "partial" if has else "new"


def _flat(d, prefix=""):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _flat(v, f"{prefix}{k}.")
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _flat(v, f"{prefix}{i}.")
    else:
        yield prefix.rstrip("."), d


def _config_difference(saved: RunConfig, wanted: RunConfig) -> Optional[str]:
    """The first differing key, or None. Keys that cannot change the run's results are left out: the
    runtime settings, the server's transfer rate where the method never trains the server, LaDa's
    settings where the method has no LaDa, and LaDa's reward under a fixed selection rule (oracle,
    random, loss, none: the reward is only logged)."""
    exclude: dict = {"runtime": True}
    if not METHODS[wanted.method].server_learns:
        exclude["server"] = {"transfer_lr"}
    if not wanted.method.endswith("+lada"):
        exclude["lada"] = True
    elif wanted.lada.filter != "eenet" and saved.lada.filter == wanted.lada.filter:
        exclude["lada"] = {"reward"}
    a = dict(_flat(saved.model_dump(mode="json", exclude=exclude)))
    b = dict(_flat(wanted.model_dump(mode="json", exclude=exclude)))
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            return f"{key}: {a.get(key, '<unset>')!r} there, {b.get(key, '<unset>')!r} asked"
    return None


def default_layout(out: Path, variant: Variant, seed: int) -> Path:
    return out / variant.dirname / f"seed-{seed}"


def plan(
    scenario: Path, variants: list[Variant], seeds: list[int], overrides: list[str], out: Path, threads: int,
    layout: Callable[[Path, Variant, int], Path] = default_layout,
) -> list[Job]:
    """One job per (variant, seed), method-major; validates every config and every existing run directory."""
    owners: dict[str, str] = {}
    for v in variants:
        if owners.setdefault(v.dirname, v.label) != v.label:
            raise ConfigError(f"--methods: {owners[v.dirname]!r} and {v.label!r} would share the run directory {v.dirname}")
    for o in overrides:
        key = o.split("=", 1)[0].strip()
        if key in RESERVED:
            raise ConfigError(f"--set {o}: {key} is chosen per run by compare (use --methods / --seeds)")
    user_threads = any(o.split("=", 1)[0].strip() == "runtime.threads" for o in overrides)
    jobs = []
    for v in variants:
        for s in seeds:
            sets = [*overrides, *v.overrides, f"seed={s}"] + ([] if user_threads else [f"runtime.threads={threads}"])
            cfg = load_config(str(scenario), sets)
            d = layout(out, v, s)
            saved = d / "config.yaml"
            if saved.exists():
                diff = _config_difference(config_from_dict(yaml.safe_load(saved.read_text())), cfg)
                if diff:
                    raise ConfigError(f"{d} holds a run of another config ({diff}); pass another --out or remove it")
            jobs.append(Job(v, s, d, cfg, scenario, sets))
    return jobs


# -- running ------------------------------------------------------------------------------------
@dataclass
class Outcome:
    job: Job
    status: str  # reused | done | failed | skipped
    returncode: int = 0
    seconds: float = 0.0  # this invocation
    message: str = ""


def _attempts(d: Path) -> list[dict]:
    path = d / ATTEMPTS
    return json.loads(path.read_text()) if path.exists() else []


def wall_seconds(d: Path) -> Optional[float]:
    """Wall time of a finished run: the sum over the processes that worked on it (None if unknown)."""
    path = d / DONE
    if path.exists():
        return json.loads(path.read_text())["wall_seconds"]
    attempts = _attempts(d)
    return round(sum(a["seconds"] for a in attempts), 3) if attempts else None


def command(job: Job) -> list[str]:
    base = [sys.executable, "-m", "fedlada.cli", "run"]
    if job.state() == "partial":
        return [*base, "--out", str(job.dir), "--resume"]
    return [*base, str(job.scenario), *(f"--set={s}" for s in job.sets), "--out", str(job.dir)]


def run_job(job: Job, *, ready: Optional[threading.Event] = None, wait_for: Optional[threading.Event] = None,
            stop: Optional[threading.Event] = None, procs: Optional[dict] = None) -> Outcome:
    """Run (or continue) one job in a subprocess, output to DIR/log.txt.

    `wait_for`: block until the seed's first run has its base models; `ready`: set once this run has
    (its round 0 is in metrics.jsonl) or it has ended.
    """
    try:
        if wait_for is not None:
            wait_for.wait()
        if stop is not None and stop.is_set():
            return Outcome(job, "skipped", message="interrupted")
        start = time.perf_counter()
        try:
            job.dir.mkdir(parents=True, exist_ok=True)
            cmd = command(job)
            log = open(job.dir / LOG, "a")
            log.write(f"$ {shlex.join(cmd)}\n")
            log.flush()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        except OSError as err:
            return Outcome(job, "failed", 1, 0.0, f"could not start: {err}")
        with log:
            if procs is not None:
                procs[id(job)] = proc
            while True:
                try:
                    rc = proc.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    if ready is not None and not ready.is_set() and (job.dir / "metrics.jsonl").exists():
                        ready.set()
            if procs is not None:
                procs.pop(id(job), None)
        seconds = time.perf_counter() - start
        attempts = _attempts(job.dir) + [{"seconds": round(seconds, 3), "returncode": rc}]
        (job.dir / ATTEMPTS).write_text(json.dumps(attempts, indent=1) + "\n")
        reached = _finished_round(job.dir)
        if rc == 0 and reached == job.cfg.rounds:
            total = sum(a["seconds"] for a in attempts)
            (job.dir / DONE).write_text(json.dumps({"wall_seconds": round(total, 3), "rounds": reached, "processes": len(attempts)}) + "\n")
            return Outcome(job, "done", rc, seconds)
        why = f"exit code {rc}" if rc else f"exit code 0 but metrics end at round {reached} of {job.cfg.rounds}"
        return Outcome(job, "failed", rc or 1, seconds, f"{why}; see {job.dir / LOG}")
    finally:
        if ready is not None:
            ready.set()


def run_all(
    jobs: list[Job], n_jobs: int, *, on_outcome: Callable[[Outcome], None] = lambda o: None,
    on_tick: Callable[[list[Job]], None] = lambda running: None,
) -> list[Outcome]:
    """Run the unfinished jobs, `n_jobs` processes at a time; finished ones are reused. Never raises
    for a failing run; on KeyboardInterrupt the running processes are stopped and no new one starts."""
    outcomes = []
    todo = []
    for job in jobs:
        if job.state() == "done":
            o = Outcome(job, "reused")
            outcomes.append(o)
            on_outcome(o)
        else:
            todo.append(job)
    # the first unfinished job of each seed prepares its base models; later ones of that seed wait for it
    leaders: dict[int, threading.Event] = {}
    stop = threading.Event()
    procs: dict[int, subprocess.Popen] = {}
    started: dict[Future, Job] = {}
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        for job in todo:
            if job.seed not in leaders:
                leaders[job.seed] = threading.Event()
                fut = pool.submit(run_job, job, ready=leaders[job.seed], stop=stop, procs=procs)
            else:
                fut = pool.submit(run_job, job, wait_for=leaders[job.seed], stop=stop, procs=procs)
            started[fut] = job
        pending = set(started)
        try:
            while pending:
                finished, pending = wait(pending, timeout=2.0, return_when=FIRST_COMPLETED)
                for fut in sorted(finished, key=lambda f: todo.index(started[f])):
                    o = fut.result()
                    outcomes.append(o)
                    on_outcome(o)
                running = [j for j in todo if id(j) in procs]
                on_tick(running)
        except KeyboardInterrupt:
            stop.set()
            for ev in leaders.values():
                ev.set()
            for proc in list(procs.values()):
                proc.terminate()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return outcomes


# -- aggregation ----------------------------------------------------------------------------------
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
    """LaDa's down picks per (client, round): the share from the client's own domains and that share in
    the candidate pool (`lada/own_share`, `lada/own_base_rate`); empty for runs without a filter."""
    seen = {}
    for r in rows:
        if r["role"] == "client" and "lada/own_share" in r:
            seen[(r["participant"], r["round"])] = {"client": r["participant"], "round": r["round"],
                                                    "share": r["lada/own_share"], "base": r["lada/own_base_rate"]}
    return list(seen.values())


def own_share_summary(results: dict, from_round: int = 2, factor: float = 2.0) -> dict:
    """Per LaDa variant and seed, from `from_round` on: the lowest own-domain share over (client, round) cells
    as a multiple of the pool's base rate, and how many cells reach `factor` times it. Why the lowest: the
    bar a domain-adaptive filter must clear is for every client, not on average."""
    out = {}
    for label, entry in results.items():
        per_seed = []
        for run in entry["runs"]:
            cells = [c for c in run.get("own_shares", []) if c["round"] >= from_round and c["base"] > 0]
            if cells:
                ratios = [c["share"] / c["base"] for c in cells]
                per_seed.append({"seed": run["seed"], "min_ratio": min(ratios), "min_share": min(c["share"] for c in cells),
                                 "reached": sum(x >= factor for x in ratios), "cells": len(cells),
                                 "base": statistics.fmean(c["base"] for c in cells)})
        if per_seed:
            out[label] = per_seed
    return out


def own_share_grid(summary: dict, code: bool = False) -> tuple[list[str], list[list[str]]]:
    q = "`" if code else ""
    seeds = sorted({p["seed"] for rows in summary.values() for p in rows})
    header = ["variant"] + [f"seed {s}" for s in seeds]
    body = []
    for label, rows in summary.items():
        by_seed = {p["seed"]: p for p in rows}
        body.append([f"{q}{label}{q}"] + [
            "–" if s not in by_seed else
            f"{by_seed[s]['min_share']:.2f} ({by_seed[s]['min_ratio']:.1f}× base {by_seed[s]['base']:.2f}); "
            f"{by_seed[s]['reached']}/{by_seed[s]['cells']} ≥ 2×" for s in seeds])
    return header, body


def stat(values: list[Optional[float]]) -> dict:
    """Mean and sample standard deviation (ddof=1; None with fewer than two values) over seeds."""
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else None, "n": len(vals)}


STAT_KEYS = ("client_own", "client_global", "server_global", "gain_own", "gain_global", "bytes_per_round", "wall_seconds")


def aggregate(runs: list[dict]) -> dict:
    """Per-method stats over that method's finished runs (each a `run_values` dict plus wall_seconds)."""
    out = {k: stat([r.get(k) for r in runs]) for k in STAT_KEYS}
    out["n"] = len(runs)
    clients = list(dict.fromkeys(c for r in runs for c in r["clients_own"]))
    out["clients_own"] = {c: stat([r["clients_own"].get(c) for r in runs]) for c in clients}
    return out


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


# -- output -----------------------------------------------------------------------------------------
def human_bytes(n: Optional[float]) -> str:
    if n is None:
        return "–"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def _fmt(st: dict, scale: float = 100.0, digits: int = 1, sign: str = "", fmt: Callable[[float], str] | None = None) -> str:
    if st["mean"] is None:
        return "–"
    one = fmt or (lambda v: f"{scale * v:{sign}.{digits}f}")
    mean = one(st["mean"])
    if st["std"] is None:
        return mean
    sd = fmt(st["std"]) if fmt else f"{scale * st['std']:.{digits}f}"
    return f"{mean} ± {sd}"


def stats_grid(stats: dict, code: bool = False) -> tuple[list[str], list[list[str]]]:
    """The comparison table: one row per method, mean ± std over seeds."""
    header = ["method", "n", "client own %", "client global %", "server %", "gain own", "gain global", "bytes/round", "wall s"]
    body = []
    for label, st in stats.items():
        body.append([
            f"`{label}`" if code else label, str(st["n"]), _fmt(st["client_own"]), _fmt(st["client_global"]),
            _fmt(st["server_global"]), _fmt(st["gain_own"], sign="+"), _fmt(st["gain_global"], sign="+"),
            _fmt(st["bytes_per_round"], fmt=human_bytes), _fmt(st["wall_seconds"], scale=1, digits=0),
        ])
    return header, body


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


def lada_vs_host(results: dict) -> dict:
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
        pair = {"host": host, "seeds": [r["seed"] for _, r in runs]}
        for key, _ in PAIRED_KEYS:
            diffs = [100 * (r[key] - h[key]) for h, r in runs if r[key] is not None and h[key] is not None]
            pair[key] = _paired(diffs)
        domains = sorted({d for h, r in runs for d in h.get("server_by_domain", {}) if d in r.get("server_by_domain", {})})
        pair["server_by_domain"] = {d: _paired([100 * (r["server_by_domain"][d] - h["server_by_domain"][d])
                                                 for h, r in runs]) for d in domains}
        out[label] = pair
    return out


def _paired(diffs: list[float]) -> dict:
    """Per-seed differences with their mean, std and verdict (`lower`/`higher` only when every seed agrees)."""
    signs = {(d > 1e-9) - (d < -1e-9) for d in diffs}
    verdict = {frozenset({-1}): "lower", frozenset({1}): "higher", frozenset({0}): "equal"}.get(frozenset(signs), "mixed")
    return {"diffs": diffs, **stat(diffs), "verdict": verdict if diffs else None}


def _paired_cell(d: dict) -> str:
    if d["mean"] is None:
        return "–"
    per_seed = " / ".join(f"{x:+.1f}" for x in d["diffs"])
    spread = f" ± {d['std']:.1f}" if d["std"] is not None else ""
    return f"{d['mean']:+.1f}{spread} ({per_seed}; {d['verdict']})"


def paired_grid(pairs: dict, code: bool = False) -> tuple[list[str], list[list[str]]]:
    header = ["LaDa vs host", "seeds"] + [f"{name} (points)" for _, name in PAIRED_KEYS]
    q = "`" if code else ""
    body = [[f"{q}{label}{q} − {q}{p['host']}{q}", str(len(p["seeds"]))] + [_paired_cell(p[k]) for k, _ in PAIRED_KEYS]
            for label, p in pairs.items()]
    return header, body


def server_domain_grids(results: dict, pairs: dict, code: bool = False) -> list[tuple[list[str], list[list[str]]]]:
    """The server per domain: final accuracy (mean ± std, and its gain over round 0) per method; then, for
    the hosts that train the server, `X+lada` minus `X` per domain, paired by seed. Empty without domains."""
    domains = sorted({d for e in results.values() for r in e["runs"] for d in r.get("server_by_domain", {})})
    if not domains:
        return []
    q = "`" if code else ""
    body = []
    for label, entry in results.items():
        runs = [r for r in entry["runs"] if r.get("server_by_domain")]
        if not runs:
            continue
        cells = []
        for d in domains:
            final = stat([r["server_by_domain"].get(d) for r in runs])
            zero = stat([r["server_by_domain"].get(d, math.nan) - r["round0"]["server_by_domain"].get(d, math.nan)
                         for r in runs])
            cells.append(f"{_fmt(final)} ({_fmt(zero, sign='+')})")
        body.append([f"{q}{label}{q}", str(len(runs)), *cells])
    grids = [(["method", "n", *(f"{d} % (gain)" for d in domains)], body)]
    paired = [[f"{q}{label}{q} − {q}{p['host']}{q}", str(len(p["seeds"]))] +
              [_paired_cell(p["server_by_domain"][d]) if d in p.get("server_by_domain", {}) else "–" for d in domains]
              for label, p in pairs.items() if p.get("server_by_domain") and
              any(abs(x) > 1e-9 for v in p["server_by_domain"].values() for x in v["diffs"])]
    if paired:
        grids.append((["LaDa vs host (server)", "seeds", *(f"{d} (points)" for d in domains)], paired))
    return grids


# -- what the scenario can judge: the testbed check and the oracle gap -------------------------------
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


def oracle_gap(results: dict) -> dict:
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
            recovered[label] = {"values": values, **stat(values)}
        out[method] = {"oracle": oracle, "random": random, "seeds": seeds,
                       "gap_points": [100 * gap[s] for s in seeds], "recovered": recovered}
    return out


def oracle_gap_grid(entry: dict, code: bool = False) -> tuple[list[str], list[list[str]]]:
    """One LaDa method's `oracle_gap`: the oracle-random gap per seed, then each variant's share of it (%)."""
    q = "`" if code else ""
    header = ["variant", "n", "gap recovered %"] + [f"seed {s}" for s in entry["seeds"]]
    body = [[f"{q}{entry['oracle']}{q} − {q}{entry['random']}{q} (points)", str(len(entry["seeds"])), ""]
            + [f"{g:+.1f}" for g in entry["gap_points"]]]
    for label, r in entry["recovered"].items():
        body.append([f"{q}{label}{q}", str(r["n"]), _fmt(r, digits=0)]
                    + ["–" if v is None else f"{100 * v:.0f}" for v in r["values"]])
    return header, body


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


def scenario_check(results: dict, configs: dict, method: str = LADA_METHOD) -> dict:
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
    return {"status": status, "line": line, "method": method, "conditions": conditions,
            "transfer": {label: transfer_rule(cfg) for label, cfg in configs.items()}}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _condition_text(key: str, c: dict, q: str) -> str:
    """The numbers behind one condition, per seed."""
    seeds = c["per_seed"]
    if key == "a":
        per = ", ".join(f"seed {p['seed']} {p['diff_points']:+.1f}" for p in seeds)
        return f"{q}{TRANSFER_HOST}{q} − {q}{BASELINE}{q}, final client own (points): {per}"
    if key == "b":
        per = ", ".join(f"seed {p['seed']} {p['diff_points']:+.1f}" for p in seeds)
        return (f"{q}{c['oracle']}{q} − {q}{c['random']}{q}, final client own: mean {c['mean_points']:+.1f} points "
                f"(≥ {c['threshold_points']:g} needed; {per})")
    if key == "c":
        def one(p):
            bad = ", ".join(f"{n} {_pct(a)}" for n, a in p["outside"].items())
            return f"seed {p['seed']} {_pct(p['min'])}–{_pct(p['max'])}" + (f" (outside: {bad})" if bad else "")
        return f"round-0 client own accuracy, min–max (must lie in {_pct(c['low'])}–{_pct(c['high'])}): " + "; ".join(map(one, seeds))
    per = "; ".join(f"seed {p['seed']} {q}{p['domain']}{q} ({p['client']}) {_pct(p['server_domain'])} vs "
                    f"{_pct(p['server_others'])} on the other domains (margin {p['margin_points']:+.1f})" for p in seeds)
    return f"round-0 server accuracy on the client domain furthest below its other domains (≥ {c['margin_points']:g} points needed): {per}"


def transfer_line(rules: dict[str, str], code: bool = False) -> str:
    """`transfer phases: RULE`, or RULE per group of variants when the variants differ."""
    q = "`" if code else ""
    groups: dict[str, list[str]] = {}
    for label, rule in rules.items():
        groups.setdefault(rule, []).append(label)
    if len(groups) <= 1:
        return f"transfer phases: {next(iter(groups), 'unknown')}"
    return "transfer phases: " + "; ".join(f"{', '.join(f'{q}{v}{q}' for v in vs)}: {rule}" for rule, vs in groups.items())


def check_lines(check: dict, code: bool = False) -> list[str]:
    """The check as lines: the overall line, one line per condition, the transfer-phase rule."""
    bullet = "- " if code else "  "
    lines = [check["line"]]
    for key, c in check["conditions"].items():
        head = f"{bullet}({key}) {c['name']}: "
        if c["status"] == "not measured":
            lines.append(head + c["why"] if code else head + c["why"].replace("`", ""))
        else:
            lines.append(head + f"{c['status'].upper()}, " + _condition_text(key, c, "`" if code else ""))
    lines.append(bullet + transfer_line(check["transfer"], code))
    return lines


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


def plot_compare(results: dict, path: Path) -> None:
    """Mean over seeds per round per method (shaded: ± sample std): client own, client global, server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("client_own", "mean client accuracy, own test"), ("client_global", "mean client accuracy, global test"),
              ("server_global", "server accuracy, global test"))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (key, title) in zip(axes, panels):
        for label, entry in results.items():
            runs = entry["runs"]
            if not runs:
                continue
            n_rounds = min(len(r["per_round"]["round"]) for r in runs)
            xs = runs[0]["per_round"]["round"][:n_rounds]
            stats = [stat([100 * r["per_round"][key][i] for r in runs]) for i in range(n_rounds)]
            nan = float("nan")
            mean = [nan if st["mean"] is None else st["mean"] for st in stats]
            line = ax.plot(xs, mean, marker="o", label=f"{label} (n={len(runs)})")[0]
            if len(runs) > 1:
                sd = [nan if st["std"] is None else st["std"] for st in stats]
                ax.fill_between(xs, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)],
                                color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].set_ylabel("accuracy (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    ncol = min(len(labels), 4) or 1
    legend_rows = -(-len(labels) // ncol)
    fig.set_size_inches(15, 4 + 0.3 * legend_rows)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0.3 * legend_rows / (4 + 0.3 * legend_rows) + 0.02, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _no_nan(x):
    """JSON has no NaN: a missing mean (e.g. no server rows) becomes null."""
    if isinstance(x, dict):
        return {k: _no_nan(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_no_nan(v) for v in x]
    return None if isinstance(x, float) and math.isnan(x) else x


def write_compare(
    out: Path, jobs: list[Job], *, scenario: str, scenario_path: Path, seeds: list[int], overrides: list[str],
    command_line: str, failed: Optional[dict[str, str]] = None, plot: bool = True,
) -> tuple[Path, dict]:
    """Write OUT/compare.json, OUT/compare.md and OUT/compare_accuracy.png from the finished runs."""
    out.mkdir(parents=True, exist_ok=True)
    failed = failed or {}
    results = collect(jobs)
    stats = {label: aggregate(entry["runs"]) for label, entry in results.items()}
    rounds = jobs[0].cfg.rounds if jobs else None
    data = {
        "scenario": scenario, "scenario_path": str(scenario_path), "command": command_line,
        "methods": list(results), "seeds": seeds, "overrides": overrides, "rounds": rounds,
        "variants": {j.variant.label: list(j.variant.overrides) for j in jobs},
        "stats": stats,
        "check": scenario_check(results, saved_configs(jobs)),
        "lada_vs_host": lada_vs_host(results),
        "oracle_gap": oracle_gap(results),
        "own_shares": own_share_summary(results),
        "runs": {label: entry["runs"] for label, entry in results.items()},
        "missing": {label: entry["missing"] for label, entry in results.items() if entry["missing"]},
    }
    (out / "compare.json").write_text(json.dumps(_no_nan(data), indent=1, allow_nan=False, default=str) + "\n")

    header, body = stats_grid(stats, code=True)
    max_round = max((len(r["bytes_by_round"]) for e in results.values() for r in e["runs"]), default=0)
    bytes_header = ["method"] + [f"round {t}" for t in range(max_round)]
    bytes_body = []
    for label, entry in results.items():
        if entry["runs"]:
            cols = [stat([r["bytes_by_round"][t] if t < len(r["bytes_by_round"]) else None for r in entry["runs"]]) for t in range(max_round)]
            bytes_body.append([f"`{label}`"] + [human_bytes(c["mean"]) for c in cols])
    set_text = ", ".join(f"`{o}`" for o in overrides) or "none"
    parts = [
        f"# fedlada compare: {scenario}",
        "",
        "## Testbed check",
        "",
        "Whether this scenario can judge a filter, over the finished seeds: (a) distilling everything beats "
        "standalone in every seed; (b) the oracle filter beats the random one by at least 10 points on average; "
        "(c) every client starts (round 0) between 5% and 90% on its own test; (d) in every seed some client "
        "domain is at least 20 points below the server's mean over its other domains at round 0.",
        "",
        *check_lines(data["check"], code=True),
        "",
        "## Results",
        "",
        "Regenerate (finished runs are reused, missing ones are run):",
        "",
        "```",
        command_line,
        "```",
        "",
        f"Scenario `{scenario}`, {rounds} round(s), seeds {', '.join(map(str, seeds))}; overrides: {set_text}. "
        f"Final round, mean ± sample std over the n finished seeds. *client* = mean over the clients; "
        f"*own* = each client's private test set, *global* = the global test set; *gain* = final minus "
        f"round 0 (points); *bytes/round* = total bytes sent by all participants in a round (every message "
        f"counted once, at serialization), mean over rounds 1..{rounds}; *wall s* = seconds per run.",
        "",
        markdown_table(header, body),
    ]
    if bytes_body:
        parts += ["", "Bytes exchanged per round (mean over seeds; round 0 = preparing and evaluating the base models):", "",
                  markdown_table(bytes_header, bytes_body)]
    if data["lada_vs_host"]:
        parts += ["", "LaDa against its host, paired by seed: `X+lada` minus `X` in points, mean ± std of the per-seed "
                  "differences (each seed's difference in brackets; *lower*/*higher*: every seed agrees):", "",
                  markdown_table(*paired_grid(data["lada_vs_host"], code=True))]
    domain_grids = server_domain_grids(results, data["lada_vs_host"], code=True)
    if domain_grids:
        parts += ["", "The server per domain of the global test, final round: accuracy % (mean ± std over seeds), in "
                  "brackets its gain over round 0 in points:", "", markdown_table(*domain_grids[0])]
    if len(domain_grids) > 1:
        parts += ["", "LaDa against its host on the server, per domain, paired by seed (points; hosts whose server "
                  "learns):", "", markdown_table(*domain_grids[1])]
    for method, entry in data["oracle_gap"].items():
        parts += ["", f"Oracle gap recovered (`{method}`): per seed, (variant − random) / (oracle − random) on final "
                  "client own accuracy, in % (100 = as good as the oracle filter, 0 = no better than random); first row: "
                  "the oracle's lead over random in points. – = no run, or no gap to scale by in that seed:", "",
                  markdown_table(*oracle_gap_grid(entry, code=True))]
    if data["own_shares"]:
        parts += ["", "Own-domain share of each LaDa variant's down picks from round 2 on, per seed: the lowest share over "
                  "(client, round) cells, as a multiple of the candidate pool's own-domain share (its base rate), and how "
                  "many cells reach twice the base rate:", "",
                  markdown_table(*own_share_grid(data["own_shares"], code=True))]
    if plot and any(e["runs"] for e in results.values()):
        plot_compare(results, out / "compare_accuracy.png")
        parts += ["", "![accuracy per round per method](compare_accuracy.png)"]
    missing = [(label, m) for label, e in results.items() for m in e["missing"]]
    if missing:
        parts += ["", "Missing runs (not in the table):", ""]
        for label, m in missing:
            why = failed.get(m["dir"]) or ("unfinished" if m["state"] == "partial" else "not run")
            parts.append(f"- `{label}` seed {m['seed']}: {why} (`{m['dir']}`)")
    path = out / "compare.md"
    path.write_text("\n".join(parts) + "\n")
    return path, data


def default_threads(n_jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // n_jobs)


# -- the whole command, with progress -----------------------------------------------------------------
@dataclass
class CompareResult:
    outcomes: list[Outcome] = field(default_factory=list)
    report: Optional[Path] = None
    data: dict = field(default_factory=dict)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def _final_line(job: Job) -> str:
    try:
        s = summary(read_rows(job.dir))
        return f"client own {100 * s['client_own']:.1f}%, global {100 * s['client_global']:.1f}%"
    except (FileNotFoundError, ValueError, KeyError):
        return ""


def compare(
    scenario: str, variants: list[Variant], seeds: list[int], *, n_jobs: int = 1, out: Optional[Path] = None,
    overrides: tuple[str, ...] | list[str] = (), command_line: str = "", report_only: bool = False, console=None,
    layout: Callable[[Path, Variant, int], Path] = default_layout,
) -> CompareResult:
    """Plan, run what is missing (with a progress bar on `console`), then write the comparison."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True, log_path=False)
    overrides = list(overrides)
    if n_jobs < 1:
        raise ConfigError(f"--jobs {n_jobs}: expected at least 1")
    scenario_path = resolve_scenario(scenario)
    out = out or Path("runs") / f"compare-{scenario_label(scenario)}"
    jobs = plan(scenario_path, variants, seeds, overrides, out, default_threads(n_jobs), layout)
    result = CompareResult()
    failed: dict[str, str] = {}
    if not report_only:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("runs", total=len(jobs))

            def on_outcome(o: Outcome) -> None:
                job = o.job
                if o.status == "reused":
                    progress.console.log(f"{job.name}: finished before, reused ({job.dir})")
                elif o.status == "done":
                    progress.console.log(f"{job.name}: done in {wall_seconds(job.dir):.0f} s; {_final_line(job)}")
                elif o.status == "failed":
                    failed[str(job.dir)] = o.message
                    progress.console.log(f"[red]{job.name}: FAILED[/red], {o.message}")
                progress.advance(task)

            def on_tick(running: list[Job]) -> None:
                now = ", ".join(f"{j.name} (round {max(_finished_round(j.dir) + 1, 0)}/{j.cfg.rounds})" for j in running)
                progress.update(task, description=f"runs{': ' + now if now else ''}")

            result.outcomes = run_all(jobs, n_jobs, on_outcome=on_outcome, on_tick=on_tick)
    result.report, result.data = write_compare(
        out, jobs, scenario=scenario_label(scenario), scenario_path=scenario_path, seeds=seeds, overrides=overrides,
        command_line=command_line, failed=failed,
    )
    return result
