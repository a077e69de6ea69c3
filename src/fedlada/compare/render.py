"""A comparison written out: compare.json, compare.md (the testbed check on top, then the tables) and
the accuracy plot; the grids are shared with the console."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Optional

from fedlada.compare.planning import Job
from fedlada.compare.results import (
    PAIRED_KEYS,
    LadaVsHost,
    MethodStats,
    Paired,
    Record,
    SeedOwnShare,
    Stat,
    aggregate,
    collect,
    lada_vs_host,
    own_share_summary,
    saved_configs,
    stat,
)
from fedlada.compare.testbed import (
    BASELINE,
    TRANSFER_HOST,
    Check,
    OracleGap,
    Recovered,
    oracle_gap,
    scenario_check,
)
from fedlada.report import markdown_table


def human_bytes(n: Optional[float]) -> str:
    if n is None:
        return "–"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def _fmt(st: Stat | Recovered, scale: float = 100.0, digits: int = 1, sign: str = "",
         fmt: Callable[[float], str] | None = None) -> str:
    if st.mean is None:
        return "–"
    one = fmt or (lambda v: f"{scale * v:{sign}.{digits}f}")
    mean = one(st.mean)
    if st.std is None:
        return mean
    sd = fmt(st.std) if fmt else f"{scale * st.std:.{digits}f}"
    return f"{mean} ± {sd}"


def stats_grid(stats: dict[str, MethodStats], code: bool = False) -> tuple[list[str], list[list[str]]]:
    """The comparison table: one row per method, mean ± std over seeds."""
    header = ["method", "n", "client own %", "client global %", "server %", "gain own", "gain global", "bytes/round", "wall s"]
    body = []
    for label, st in stats.items():
        body.append([
            f"`{label}`" if code else label, str(st.n), _fmt(st.client_own), _fmt(st.client_global),
            _fmt(st.server_global), _fmt(st.gain_own, sign="+"), _fmt(st.gain_global, sign="+"),
            _fmt(st.bytes_per_round, fmt=human_bytes), _fmt(st.wall_seconds, scale=1, digits=0),
        ])
    return header, body


def _paired_cell(d: Paired) -> str:
    if d.mean is None:
        return "–"
    per_seed = " / ".join(f"{x:+.1f}" for x in d.diffs)
    spread = f" ± {d.std:.1f}" if d.std is not None else ""
    return f"{d.mean:+.1f}{spread} ({per_seed}; {d.verdict})"


def paired_grid(pairs: dict[str, LadaVsHost], code: bool = False) -> tuple[list[str], list[list[str]]]:
    header = ["LaDa vs host", "seeds"] + [f"{name} (points)" for _, name in PAIRED_KEYS]
    q = "`" if code else ""
    body = [[f"{q}{label}{q} − {q}{p.host}{q}", str(len(p.seeds))] + [_paired_cell(getattr(p, k)) for k, _ in PAIRED_KEYS]
            for label, p in pairs.items()]
    return header, body


def server_domain_grids(
    results: dict, pairs: dict[str, LadaVsHost], code: bool = False,
) -> list[tuple[list[str], list[list[str]]]]:
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
    paired = [[f"{q}{label}{q} − {q}{p.host}{q}", str(len(p.seeds))] +
              [_paired_cell(p.server_by_domain[d]) if d in p.server_by_domain else "–" for d in domains]
              for label, p in pairs.items() if p.server_by_domain and
              any(abs(x) > 1e-9 for v in p.server_by_domain.values() for x in v.diffs)]
    if paired:
        grids.append((["LaDa vs host (server)", "seeds", *(f"{d} (points)" for d in domains)], paired))
    return grids


def _own_share_cell(p: SeedOwnShare) -> str:
    possible = "" if p.of_possible is None else f"; lowest {p.of_possible:.2f} of possible"
    return (f"{p.min_ratio:.1f}× ({p.client} round {p.round}: {p.share:.2f}, base {p.base:.2f}{possible}); "
            f"{p.reached}/{p.cells} ≥ 2×")


def own_share_grid(summary: dict[str, list[SeedOwnShare]], code: bool = False) -> tuple[list[str], list[list[str]]]:
    q = "`" if code else ""
    seeds = sorted({p.seed for rows in summary.values() for p in rows})
    header = ["variant"] + [f"seed {s}" for s in seeds]
    body = []
    for label, rows in summary.items():
        by_seed = {p.seed: p for p in rows}
        body.append([f"{q}{label}{q}"] + ["–" if s not in by_seed else _own_share_cell(by_seed[s]) for s in seeds])
    return header, body


def oracle_gap_grid(entry: OracleGap, code: bool = False) -> tuple[list[str], list[list[str]]]:
    """One LaDa method's `oracle_gap`: the oracle-random gap per seed, then each variant's share of it (%)."""
    q = "`" if code else ""
    header = ["variant", "n", "gap recovered %"] + [f"seed {s}" for s in entry.seeds]
    body = [[f"{q}{entry.oracle}{q} − {q}{entry.random}{q} (points)", str(len(entry.seeds)), ""]
            + [f"{g:+.1f}" for g in entry.gap_points]]
    for label, r in entry.recovered.items():
        body.append([f"{q}{label}{q}", str(r.n), _fmt(r, digits=0)]
                    + ["–" if v is None else f"{100 * v:.0f}" for v in r.values])
    return header, body


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


def check_lines(check: Check, code: bool = False) -> list[str]:
    """The check as lines: the overall line, one line per condition, the transfer-phase rule."""
    bullet = "- " if code else "  "
    lines = [check.line]
    for key, c in check.conditions.items():
        head = f"{bullet}({key}) {c['name']}: "
        if c["status"] == "not measured":
            lines.append(head + c["why"] if code else head + c["why"].replace("`", ""))
        else:
            lines.append(head + f"{c['status'].upper()}, " + _condition_text(key, c, "`" if code else ""))
    lines.append(bullet + transfer_line(check.transfer, code))
    return lines


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
            mean = [nan if st.mean is None else st.mean for st in stats]
            line = ax.plot(xs, mean, marker="o", label=f"{label} (n={len(runs)})")[0]
            if len(runs) > 1:
                sd = [nan if st.std is None else st.std for st in stats]
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
    """JSON has no NaN: a missing mean (e.g. no server rows) becomes null. Records become the dicts of their
    fields."""
    if isinstance(x, (dict, Record)):
        return {k: _no_nan(v) for k, v in dict(x).items()}
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
            bytes_body.append([f"`{label}`"] + [human_bytes(c.mean) for c in cols])
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
        parts += ["", "Own-domain share of each LaDa variant's down picks from round 2 on, per seed: the (client, round) "
                  "cell whose share is the lowest multiple of its base rate (the own-domain share of that client's filter "
                  "pool, the candidates with a correct teacher path), with its share and base; the lowest "
                  "share as a fraction of the highest one a filter reaches with no wrong teacher path (*possible*: the "
                  "own-domain candidates the teacher got right, over the budget; where it lies under twice the base rate, "
                  "no such filter can reach twice it), and how many cells reach twice the base rate:", "",
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
