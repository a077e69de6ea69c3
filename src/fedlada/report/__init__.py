"""Run reports: a per-round accuracy table (markdown), summary numbers and a plot, from metrics.jsonl."""

from __future__ import annotations

import json
import math
from pathlib import Path

SPLIT_LABEL = {"local_test": "own", "global_test": "global"}


def read_rows(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no metrics (is {run_dir} a fedlada run directory?)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _columns(rows: list[dict]) -> list[tuple[str, str]]:
    seen = []
    for r in rows:
        key = (r["participant"], r["split"])
        if key not in seen:
            seen.append(key)
    return seen


def accuracy_grid(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and body of the round x (participant, split) accuracy table, accuracies in percent."""
    cols = _columns(rows)
    rounds = sorted({r["round"] for r in rows})
    acc = {(r["round"], r["participant"], r["split"]): r["accuracy"] for r in rows}
    header = ["round"] + [f"{p} ({SPLIT_LABEL.get(s, s)})" for p, s in cols]
    body = [[str(t)] + [f"{100 * acc[(t, p, s)]:.1f}" if (t, p, s) in acc else "" for p, s in cols] for t in rounds]
    return header, body


def mean_accuracy(rows: list[dict], round_: int, role: str, split: str) -> float:
    """Mean accuracy over the participants of `role` ("client" | "server") on `split` in a round; nan if none."""
    vals = [r["accuracy"] for r in rows if r["round"] == round_ and r["role"] == role and r["split"] == split]
    return sum(vals) / len(vals) if vals else float("nan")


def summary(rows: list[dict]) -> dict[str, float]:
    """Final-round numbers: mean client accuracy (own and global test), server accuracy, gains over round 0."""
    last = max(r["round"] for r in rows)

    def mean(t, role, split):
        return mean_accuracy(rows, t, role, split)

    out = {
        "rounds": last,
        "client_own": mean(last, "client", "local_test"),
        "client_global": mean(last, "client", "global_test"),
        "server_global": mean(last, "server", "global_test"),
    }
    out["client_own_gain"] = out["client_own"] - mean(0, "client", "local_test")
    out["client_global_gain"] = out["client_global"] - mean(0, "client", "global_test")
    out["server_gain"] = out["server_global"] - mean(0, "server", "global_test")
    return out


BY_DOMAIN = "accuracy_by_domain/"


def server_domain_grid(rows: list[dict]) -> tuple[list[str], list[list[str]]] | None:
    """Header and body of the server's round x domain accuracy table (global test, in percent); None
    without per-domain numbers. Why: a gain on the domain the server lacked must be visible next to any
    loss elsewhere."""
    server = sorted((r for r in rows if r["role"] == "server" and r["split"] == "global_test"), key=lambda r: r["round"])
    domains = sorted({k.removeprefix(BY_DOMAIN) for r in server for k in r if k.startswith(BY_DOMAIN)})
    if not domains:
        return None
    body = [[str(r["round"])] + [f"{100 * r[BY_DOMAIN + d]:.1f}" if BY_DOMAIN + d in r else "" for d in domains]
            for r in server]
    return ["round", *domains], body


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def plot_accuracy(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, split in zip(axes, ("local_test", "global_test")):
        for participant in dict.fromkeys(r["participant"] for r in rows):
            pts = sorted((r["round"], r["accuracy"]) for r in rows if r["participant"] == participant and r["split"] == split)
            if pts:
                ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=participant)
        ax.set_title(f"accuracy on {SPLIT_LABEL[split]} test set")
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def read_selections(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "selections.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def average_ranks(xs: list[float]) -> list[float]:
    """1-based ranks, tied values sharing the mean of the ranks they span ([5, 1, 5] -> [2.5, 1, 2.5])."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in order[i:j + 1]:
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman's rho without scipy: Pearson's correlation of the average ranks."""
    rx, ry = average_ranks(xs), average_ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))


def rank_correlation(xs: list, ys: list) -> float | None:
    """Spearman's rho over the pairs where both values are known (scipy's where installed).

    None with fewer than three pairs (two points are always perfectly ranked, +-1 says nothing) or
    when one side is constant (no order to correlate with)."""
    pts = [(x, y) for x, y in zip(xs, ys) if _known(x) and _known(y)]
    if len(pts) < 3 or len({x for x, _ in pts}) < 2 or len({y for _, y in pts}) < 2:
        return None
    a, b = [x for x, _ in pts], [y for _, y in pts]
    try:
        from scipy.stats import spearmanr
    except ImportError:
        return _spearman(a, b)
    return float(spearmanr(a, b)[0])


def _known(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


LADA_EXTRAS = ("lada/own_share", "lada/own_base_rate", "lada/own_possible", "lada/reward")


def own_domain_rounds(selections: list[dict], rows: list[dict]) -> list[dict]:
    """Per client and round >= 1 of the down direction: picks, share of own-domain picks, the pool's
    own-domain base rate, the highest share with correct teacher paths (`lada.transfer.own_possible`),
    mean reward of the picks, and the own-test gain of that round (points).

    Why next to each other: a filter that serves the learner should pick its own domains above their
    base rate, and a reward that means something should rise with the round's own-test gain. The
    client rows' `lada/*` extras are used where present; older runs fall back to selections.jsonl
    (share from `own_domain`, when every pick carries it; reward as the picks' mean); None = unknown."""
    down = [s for s in selections if s["direction"] == "down"]
    extras: dict[tuple[str, int], dict] = {}
    own: dict[tuple[str, int], float] = {}
    for r in rows:
        if r["role"] != "client":
            continue
        key = (r["participant"], r["round"])
        if r["split"] == "local_test":
            own[key] = r["accuracy"]
        found = {k: r[k] for k in LADA_EXTRAS if _known(r.get(k))}
        if found and r["round"] >= 1:
            extras.setdefault(key, {}).update(found)
    keys = list(dict.fromkeys([(s["client"], s["round"]) for s in down if s["round"] >= 1] + list(extras)))
    clients = list(dict.fromkeys(c for c, _ in keys))
    out = []
    for c, t in sorted(keys, key=lambda k: (clients.index(k[0]), k[1])):
        picks = [s for s in down if (s["client"], s["round"]) == (c, t)]
        e = extras.get((c, t), {})
        flags = [bool(s["own_domain"]) for s in picks if s.get("own_domain") is not None]
        share = e.get("lada/own_share", sum(flags) / len(flags) if flags and len(flags) == len(picks) else None)
        reward = e.get("lada/reward", sum(s["reward"] for s in picks) / len(picks) if picks else None)
        gain = 100 * (own[(c, t)] - own[(c, t - 1)]) if (c, t) in own and (c, t - 1) in own else None
        out.append({"client": c, "round": t, "picks": len(picks), "own_share": share,
                    "own_base_rate": e.get("lada/own_base_rate"), "own_possible": e.get("lada/own_possible"),
                    "reward": reward, "gain_points": gain})
    return out


def reward_gain_correlations(per_round: list[dict]) -> dict[str, float | None]:
    """Spearman's rho between a round's mean reward and its own-test gain: per client over its rounds,
    and (key "all") over every (client, round) pair."""
    clients = list(dict.fromkeys(r["client"] for r in per_round))
    out = {c: rank_correlation([r["reward"] for r in per_round if r["client"] == c],
                               [r["gain_points"] for r in per_round if r["client"] == c]) for c in clients}
    out["all"] = rank_correlation([r["reward"] for r in per_round], [r["gain_points"] for r in per_round])
    return out


def _own_domain_tables(selections: list[dict], rows: list[dict]) -> list[str]:
    per_round = own_domain_rounds(selections, rows)
    if not per_round:
        return []

    def cell(x, fmt: str) -> str:
        return "–" if x is None else format(x, fmt)

    def pct(x) -> str:
        return cell(None if x is None else 100 * x, ".0f")

    header = ["client", "round", "picks", "own-domain picks %", "own-domain in pool %", "possible %", "mean reward",
              "own-test gain (points)"]
    body = [[r["client"], str(r["round"]), str(r["picks"]), pct(r["own_share"]), pct(r["own_base_rate"]),
             pct(r["own_possible"]), cell(r["reward"], ".3f"), cell(r["gain_points"], "+.1f")] for r in per_round]
    lines = [
        "", "Own-domain picks (down direction), per client and round: the share of the picks from one of the "
        "learner's own domains against that share in the filter's pool (the candidates with a correct teacher path) and against the highest share with "
        "no wrong teacher path (*possible*: own-domain candidates the teacher got right, over the budget), "
        "the picks' mean reward, and the client's own-test gain that round (own accuracy at round t minus "
        "round t−1):", "",
        markdown_table(header, body),
    ]
    known = [r for r in per_round if _known(r["reward"]) and _known(r["gain_points"])]
    if not known:  # no metrics rows: no gains to correlate with
        return lines
    rho = reward_gain_correlations(per_round)
    body2 = [[c, str(sum(r["client"] == c for r in known)), cell(v, "+.2f")] for c, v in rho.items() if c != "all"]
    body2.append(["all (client, round) pairs", str(len(known)), cell(rho["all"], "+.2f")])
    return lines + [
        "", "Does the reward track the gain? Spearman's rank correlation between a round's mean reward and "
        "its own-test gain (– = fewer than 3 rounds, or a constant side):", "",
        markdown_table(["client", "rounds", "Spearman ρ"], body2),
    ]


def filter_section(selections: list[dict], metrics: list[dict] | tuple = ()) -> list[str]:
    """Mean reward per round and pair, what each pair's filter chose (difficulty, correctness, domains)
    and, with the run's `metrics` rows, own-domain picks against the pool and reward against own-test gain."""
    pairs = list(dict.fromkeys((s["client"], s["direction"]) for s in selections))
    rounds = sorted({s["round"] for s in selections})

    def mean(xs):
        return sum(xs) / len(xs) if xs else float("nan")

    header = ["round"] + [f"server→{c}" if d == "down" else f"{c}→server" for c, d in pairs]
    body = [
        [str(t)] + [f"{mean([s['reward'] for s in selections if s['round'] == t and (s['client'], s['direction']) == p]):.3f}" for p in pairs]
        for t in rounds
    ]
    domains = sorted({s.get("domain", "?") for s in selections})
    header2 = ["pair", "chosen", "learner NLL of path", "path chars", "teacher right %", "learner right %"] + [f"{d} %" for d in domains]
    body2 = []
    for c, d in pairs:
        rows = [s for s in selections if (s["client"], s["direction"]) == (c, d)]
        body2.append([
            f"server→{c}" if d == "down" else f"{c}→server", str(len(rows)),
            f"{mean([s['features'][0] for s in rows]):.3f}", f"{mean([math.expm1(s['features'][3]) for s in rows]):.0f}",
            f"{100 * mean([s['teacher_correct'] for s in rows]):.0f}", f"{100 * mean([s['learner_correct'] for s in rows]):.0f}",
            *[f"{100 * mean([s.get('domain', '?') == dom for s in rows]):.0f}" for dom in domains],
        ])
    return [
        "## Filters", "",
        "Mean learnability reward of the chosen samples, per round and pair (`lada.reward`, docs/design-choices.md):", "",
        markdown_table(header, body), "",
        "What each filter chose over the run: the learner's per-token NLL of the offered path (difficulty "
        "for that learner), path length, how often the offered path was right and the learner's own path "
        "was right, and the domains of the chosen public questions:", "",
        markdown_table(header2, body2),
        *_own_domain_tables(selections, list(metrics)),
    ]


def audit_statement(rows: list[dict]) -> list[str]:
    """The privacy audit's line (federation/audit.py): messages and bytes checked, seconds spent."""
    server = [r for r in rows if r["role"] == "server" and r["split"] == "global_test"]
    if not any("audit/messages" in r for r in server):
        return ["", "Privacy audit: off (runtime.audit=false); messages were not checked for private text."] \
            if any(r.get("audit/off") for r in server) else []
    n, nbytes, secs = (sum(r.get(k, 0) for r in server) for k in ("audit/messages", "audit/bytes", "audit/seconds"))
    return ["", f"Privacy audit: every message was checked for the clients' private prompts, solutions and "
                f"sample ids before it was sent: {int(n)} messages, {nbytes / 1e6:.1f} MB, {secs:.2f} s in all; "
                "no violation (one would have stopped the run). Weights, logits and other arrays are not text "
                "and are not checked (docs/reliability.md)."]


def write_report(run_dir: Path, *, plot: bool = True) -> Path:
    run_dir = Path(run_dir)
    rows = read_rows(run_dir)
    header, body = accuracy_grid(rows)
    s = summary(rows)
    parts = [
        f"# fedlada run report: {run_dir.name}",
        "",
        "Accuracy (%) per round; *own* = the participant's private test set, *global* = the global test set.",
        "",
        markdown_table(header, body),
        "",
        f"Final round {s['rounds']}: mean client accuracy {100 * s['client_own']:.1f}% own "
        f"({100 * s['client_own_gain']:+.1f} vs round 0), {100 * s['client_global']:.1f}% global "
        f"({100 * s['client_global_gain']:+.1f}); server {100 * s['server_global']:.1f}% ({100 * s['server_gain']:+.1f}).",
    ]
    by_domain = server_domain_grid(rows)
    if by_domain:
        parts += ["", "Server accuracy (%) on the global test set, per domain:", "", markdown_table(*by_domain)]
    parts += audit_statement(rows)
    if plot:
        plot_accuracy(rows, run_dir / "accuracy.png")
        parts += ["", "![accuracy per round](accuracy.png)"]
    selections = read_selections(run_dir)
    if selections:
        parts += ["", *filter_section(selections, rows)]
    out = run_dir / "report.md"
    out.write_text("\n".join(parts) + "\n")
    return out
