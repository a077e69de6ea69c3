"""Compare methods over seeds on one scenario: run every (method, seed) as its own `fedlada run`
process, J at a time, then aggregate the finished runs into compare.md, compare.json and a plot.

Layout: `OUT/METHOD/seed-S/` is a plain run directory (config.yaml, metrics.jsonl, report.md)
plus `log.txt` (the run's output), `attempts.json` (wall seconds and exit code of every process
that worked on it) and, once it has finished, `done.json`. Finished runs are reused; an
unfinished one with metrics is continued with `fedlada run --out DIR --resume`.

Runs are scheduled method-major (for method: for seed), so concurrent jobs are different seeds,
and the later methods of a seed wait until its first run has prepared (and cached) the seed's
base models, which every method of that seed shares.
"""

from __future__ import annotations

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
from fedlada.hosts import HOSTS
from fedlada.report import markdown_table, mean_accuracy, read_rows, summary

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


@dataclass(frozen=True)
class Variant:
    """One compared column: a label and the overrides that make it (for `compare`: one method)."""

    label: str
    overrides: tuple[str, ...]
    slug: str = ""

    @property
    def dirname(self) -> str:
        return self.slug or self.label

    @classmethod
    def method(cls, name: str) -> Variant:
        return cls(name, (f"method={name}",))


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
    runtime settings, and the server's transfer rate where the method never trains the server."""
    exclude: dict = {"runtime": True}
    if not HOSTS[wanted.method].server_learns:
        exclude["server"] = {"transfer_lr"}
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
        "final_round": last,
        "client_own": s["client_own"],
        "client_global": s["client_global"],
        "server_global": s["server_global"],
        "gain_own": s["client_own_gain"],
        "gain_global": s["client_global_gain"],
        "bytes_per_round": sum(exchange) / len(exchange) if exchange else None,
        "bytes_by_round": [by_round.get(t, 0) for t in rounds],
        "clients_own": {c: own[c] for c in clients if c in own},
        "per_round": {
            "round": rounds,
            "client_own": [mean_accuracy(rows, t, "client", "local_test") for t in rounds],
            "client_global": [mean_accuracy(rows, t, "client", "global_test") for t in rounds],
            "server_global": [mean_accuracy(rows, t, "server", "global_test") for t in rounds],
        },
    }


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


def lada_vs_host(results: dict) -> dict:
    """`X+lada` minus `X`, paired by seed, for every X compared alongside its LaDa variant.

    Why paired: the seeds' round-0 models differ far more than the methods do, so the spread of the
    per-seed difference, not the spread of each method's mean, says whether LaDa's effect is real.
    Per metric: the differences (points, by seed), their mean and sample std, and `lower`/`higher`
    when every seed agrees in sign (else `mixed`; `equal` when all are zero).
    """
    out = {}
    for label, entry in results.items():
        host = label.removesuffix("+lada")
        if host == label or host not in results:
            continue
        base = {r["seed"]: r for r in results[host]["runs"]}
        runs = [(base[r["seed"]], r) for r in entry["runs"] if r["seed"] in base]
        if not runs:
            continue
        pair = {"host": host, "seeds": [r["seed"] for _, r in runs]}
        for key, _ in PAIRED_KEYS:
            diffs = [100 * (r[key] - h[key]) for h, r in runs if r[key] is not None and h[key] is not None]
            signs = {(d > 1e-9) - (d < -1e-9) for d in diffs}
            verdict = {frozenset({-1}): "lower", frozenset({1}): "higher", frozenset({0}): "equal"}.get(frozenset(signs), "mixed")
            pair[key] = {"diffs": diffs, **stat(diffs), "verdict": verdict if diffs else None}
        out[label] = pair
    return out


def paired_grid(pairs: dict, code: bool = False) -> tuple[list[str], list[list[str]]]:
    header = ["LaDa vs host", "seeds"] + [f"{name} (points)" for _, name in PAIRED_KEYS]

    def cell(d: dict) -> str:
        if d["mean"] is None:
            return "–"
        per_seed = " / ".join(f"{x:+.1f}" for x in d["diffs"])
        spread = f" ± {d['std']:.1f}" if d["std"] is not None else ""
        return f"{d['mean']:+.1f}{spread} ({per_seed}; {d['verdict']})"

    q = "`" if code else ""
    body = [[f"{q}{label}{q} − {q}{p['host']}{q}", str(len(p["seeds"]))] + [cell(p[k]) for k, _ in PAIRED_KEYS]
            for label, p in pairs.items()]
    return header, body


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
        "lada_vs_host": lada_vs_host(results),
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
