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


def filter_section(selections: list[dict]) -> list[str]:
    """Mean reward per round and pair, and what each pair's filter chose (difficulty, correctness, domains)."""
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
        "Mean learnability reward of the chosen samples, per round and pair (DESIGN 3.3):", "",
        markdown_table(header, body), "",
        "What each filter chose over the run: the learner's per-token NLL of the offered path (difficulty "
        "for that learner), path length, how often the offered path was right and the learner's own path "
        "was right, and the domains of the chosen public questions:", "",
        markdown_table(header2, body2),
    ]


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
    if plot:
        plot_accuracy(rows, run_dir / "accuracy.png")
        parts += ["", "![accuracy per round](accuracy.png)"]
    selections = read_selections(run_dir)
    if selections:
        parts += ["", *filter_section(selections)]
    out = run_dir / "report.md"
    out.write_text("\n".join(parts) + "\n")
    return out
