"""Does a LaDa reward rank samples the way their effect on the client's own test does?

    python benchmarks/reward_probe.py CONFIG [--set key=value ...] [--seed S] [--budget B] [--out FILE.md]

LaDa's down direction pays each client's filter a reward per pick (`lada.reward`: `heldout` = the
pick's gradient cosine with the client's held-out own-data loss, `nll_drop` = the relative drop of the
pick's NLL). A filter can only learn what the reward pays for, so the reward must order samples as
their real effect does. This probe fixes the round-1 candidate pool and the server's paths on it, and
for every client trains one transfer phase per *selection rule* (random, highest / lowest learner NLL,
highest domain affinity, own domain only, other domains only, every correct path), each from the
client's round-0 model. Per rule it measures both rewards of the picks, the realised drop of the
held-out loss, and the own-test gain; then the Spearman correlation, across rules, between each
reward and the own-test gain (per client and pooled over (client, rule) pairs).

The phase is LaDa's SFT control (`client.mixed_sft`: the configured own-data share mixed in, sized by
`round.transfer`); the picks are drawn among the candidates whose server path is correct, as only
those are trained on. CONFIG is a scenario YAML or a packaged name (`standard`, `quickstart`).
Base models come from the cache (`runtime.cache_dir`, default ~/.cache/fedlada), else are trained.
"""

from __future__ import annotations

import argparse
import random
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedlada.compare import resolve_scenario
from fedlada.config import load_config
from fedlada.federation.participants import Client, Server, torch_device
from fedlada.config import default_cache_dir
from fedlada.federation.fit import federation_data
from fedlada.filter.features import QuestionEmbedder
from fedlada.filter.reward import heldout_alignment_reward, learnability_reward
from fedlada.lada.transfer import OWN_DATA_SAMPLE, per_token_nll
from fedlada.progress import RichUI
from fedlada.report import markdown_table, rank_correlation
from fedlada.seeding import derive_seed

RULES = ("random", "highest learner NLL", "lowest learner NLL", "highest domain affinity", "own domain only",
         "other domains only", "every correct path")
REWARDS = {"heldout": "heldout", "nll_drop": "nll_drop", "held-out NLL drop (realised, for reference)": "heldout_drop"}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Pool:
    """Round 1's candidates with the server's paths, restricted to the correct paths (the trainable ones)."""

    prompts: list[str]
    paths: list[str]
    domains: list[str]
    offered: int  # candidates (x paths per question) before keeping the correct ones


@dataclass
class Base:
    """What every rule needs from one client's round-0 model, measured once: all rules start from it."""

    state: dict  # the trainable weights, restored before each rule
    own: np.ndarray  # per candidate: its domain is one of the client's
    nll: np.ndarray  # per candidate: per-token NLL of the server path (nll_drop's "before")
    affinity: np.ndarray  # per candidate: cosine of its question's mean hidden state to the own-prompt centroid
    cosines: np.ndarray  # per candidate: gradient cosine with the held-out loss gradient (heldout's "before")
    heldout_nll: float  # mean per-token NLL of the held-out gold solutions
    accuracy: float  # own-test accuracy


def build(cfg):
    """Server and clients exactly as the runner builds them, each prepared (cached base model, else trained)."""
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    data = federation_data(cfg)
    kw = dict(device=torch_device(cfg.runtime.device), cache_dir=default_cache_dir(cfg), ui=RichUI())
    server = Server(cfg, data.server_corpus, data.public, data.global_test, **kw)
    clients = [Client(i, cfg, cd.train, cd.test, data.global_test, cd.heldout, **kw)
               for i, cd in enumerate(data.clients)]
    for part in [server, *clients]:
        start = time.perf_counter()
        cached = part.prepare().get("cached") == 1.0
        log(f"{part.name}: base model {'from the cache' if cached else 'trained (now cached)'} "
            f"in {time.perf_counter() - start:.0f}s")
    for client in clients:
        if not client.heldout:
            raise SystemExit(f"{client.name} has no held-out slice: set data.client_heldout > 0")
    return server, clients


def candidate_pool(server: Server) -> Pool:
    """Round 1's pool and the server's (verified) paths on it, as LaDa offers them to every client."""
    pool = server.candidate_pool(1)
    offer, _ = server.teacher_paths(1, pool)
    expanded = [e for e in pool for _ in range(server.cfg.round.paths_per_question)]
    keep = [i for i, ok in enumerate(offer.correct) if ok]
    log(f"round-1 pool: {len(offer.paths)} candidates, {len(keep)} with a correct server path")
    return Pool([offer.prompts[i] for i in keep], [offer.paths[i] for i in keep], [expanded[i].domain for i in keep],
                len(offer.paths))


def measure_base(client: Client, pool: Pool) -> Base:
    """The round-0 model's view of every candidate and of its own held-out and test sets. The "before" parts
    of both rewards depend only on this model, so they are measured once for all candidates and each rule
    reads its picks' values (what `lada.transfer.reward_probe` would compute on the same picks)."""
    lm, bs = client.lm, client.cfg.runtime.eval_batch_size
    start = time.perf_counter()
    nll = per_token_nll(lm, pool.prompts, pool.paths, bs)
    embedder = QuestionEmbedder(lm, [e.prompt for e in client.train[:OWN_DATA_SAMPLE]], client.cfg.lada.embedding_dim,
                                client.cfg.seed, client.name)
    _, affinity = embedder(pool.prompts)
    held_prompts, held_solutions = [e.prompt for e in client.heldout], [e.solution for e in client.heldout]
    cosines = lm.gradient_cosines(pool.prompts, pool.paths, lm.loss_gradient(held_prompts, held_solutions))
    heldout_nll = float(per_token_nll(lm, held_prompts, held_solutions, bs).mean())
    accuracy = client.accuracy(client.test)[0]
    log(f"{client.name}: round-0 measures in {time.perf_counter() - start:.0f}s "
        f"(own-test accuracy {100 * accuracy:.1f}%)")
    own = np.array([d in client.domains for d in pool.domains], dtype=bool)
    return Base(lm.state_dict_cpu(), own, nll, np.asarray(affinity, dtype=np.float64), cosines, heldout_nll, accuracy)


def select(rule: str, base: Base, budget: int, seed: int) -> list[int]:
    """The candidates (indices into the correct pool) a rule picks; ties broken by pool order (stable sort).
    The random rules draw from their own seed, so no rule's picks depend on which rules ran before it."""
    rng = random.Random(seed)
    rows = list(range(len(base.nll)))
    if rule == "random":
        return sorted(rng.sample(rows, min(budget, len(rows))))
    if rule == "highest learner NLL":
        return list(np.argsort(-base.nll, kind="stable")[:budget])
    if rule == "lowest learner NLL":
        return list(np.argsort(base.nll, kind="stable")[:budget])
    if rule == "highest domain affinity":
        return list(np.argsort(-base.affinity, kind="stable")[:budget])
    if rule in ("own domain only", "other domains only"):
        match = [i for i in rows if base.own[i] == (rule == "own domain only")]
        return sorted(rng.sample(match, min(budget, len(match))))
    if rule == "every correct path":
        return rows
    raise ValueError(rule)


def probe(client: Client, pool: Pool, base: Base, picks: list[int]) -> dict[str, float]:
    """One transfer phase on the picks from the round-0 model, and what it did: both rewards per pick
    (their means), the realised held-out loss drop, the own-test accuracy and its gain."""
    lm, bs = client.lm, client.cfg.runtime.eval_batch_size
    lm.load_state_dict(base.state)
    prompts, paths = [pool.prompts[i] for i in picks], [pool.paths[i] for i in picks]
    stats = client.mixed_sft(1, prompts, paths, "probe")
    has_target = np.ones(len(picks), dtype=bool)
    nll_after = per_token_nll(lm, prompts, paths, bs) if picks else np.zeros(0)
    nll_drop = learnability_reward(base.nll[picks], nll_after, has_target)
    heldout = heldout_alignment_reward(base.cosines[picks], has_target)
    held_after = float(per_token_nll(lm, [e.prompt for e in client.heldout], [e.solution for e in client.heldout],
                                     bs).mean())
    accuracy = client.accuracy(client.test)[0]
    lm.load_state_dict(base.state)  # leave the client at round 0
    return {"picks": len(picks), "own_share": _mean(base.own[picks]), "heldout": _mean(heldout),
            "nll_drop": _mean(nll_drop), "heldout_drop": base.heldout_nll - held_after, "accuracy": accuracy,
            "gain": 100 * (accuracy - base.accuracy), "steps": stats.get("steps/probe", 0.0)}


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else float("nan")  # no picks (a client the pool has no own domain for)


def _num(x: float, spec: str) -> str:
    return "–" if np.isnan(x) else format(x, spec)


def client_table(base: Base, results: dict[str, dict]) -> str:
    """A row per rule; "steps" shows how `round.transfer` sized each phase (its epochs follow the picks)."""
    header = ["rule", "picks", "own share", "heldout reward", "nll_drop reward", "held-out NLL drop", "steps",
              "own test %", "gain (pts)"]
    body = [["round-0 model", "", "", "", "", "", "", f"{100 * base.accuracy:.1f}", ""]]
    body += [[rule, str(r["picks"]), _num(r["own_share"], ".2f"), _num(r["heldout"], "+.4f"),
              _num(r["nll_drop"], ".4f"), f"{r['heldout_drop']:+.4f}", f"{r['steps']:.0f}",
              f"{100 * r['accuracy']:.1f}", f"{r['gain']:+.1f}"] for rule, r in results.items()]
    return markdown_table(header, body)


def correlation_table(all_results: dict[str, dict[str, dict]]) -> str:
    """Spearman's rho, across rules, of each reward's mean against the own-test gain (n/a: constant side)."""
    def rho(rows: list[dict], key: str) -> str:
        value = rank_correlation([r[key] for r in rows], [r["gain"] for r in rows])
        return "n/a" if value is None else f"{value:+.2f}"

    names = list(all_results)
    pooled = [r for results in all_results.values() for r in results.values()]
    body = [[label, *(rho(list(all_results[n].values()), key) for n in names), rho(pooled, key)]
            for label, key in REWARDS.items()]
    return markdown_table(["signal vs own-test gain", *names, f"pooled ({len(pooled)} pairs)"], body)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="scenario YAML or packaged name")
    ap.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    ap.add_argument("--seed", type=int, default=None, help="overrides the config's seed")
    ap.add_argument("--budget", type=int, default=None, help="picks per rule (default lada.budget)")
    ap.add_argument("--out", type=Path, default=None, help="also write the report to this markdown file")
    return ap.parse_args()


def probe_client(client: Client, pool: Pool, budget: int, seed: int) -> tuple[Base, dict[str, dict]]:
    """Every rule on one client, each from its round-0 model."""
    base = measure_base(client, pool)
    results = {}
    for rule in RULES:
        start = time.perf_counter()
        picks = select(rule, base, budget, derive_seed(seed, client.name, "reward-probe", rule))
        r = results[rule] = probe(client, pool, base, picks)
        log(f"{client.name} / {rule}: {r['picks']} picks, own share {r['own_share']:.2f}, {r['steps']:.0f} steps, "
            f"gain {r['gain']:+.1f} pts ({time.perf_counter() - start:.0f}s)")
    return base, results


def render(cfg, budget: int, command: str, pool: Pool, clients: list[Client], bases: list[Base],
           all_results: dict[str, dict[str, dict]]) -> str:
    """The markdown report; nothing in it varies between runs of the same command (no timings)."""
    sections = [f"## {c.name} (domains {', '.join(c.domains)}; {int(b.own.sum())} of {len(b.own)} correct "
                f"candidates own-domain)\n\n{client_table(b, all_results[c.name])}" for c, b in zip(clients, bases)]
    return "\n\n".join([
        f"# Reward probe: {cfg.name}, seed {cfg.seed}, budget {budget}\n\n```\n{command}\n```",
        f"Round-1 pool: {pool.offered} candidates, {len(pool.prompts)} with a correct server path (the picks are "
        f"drawn among those). One transfer phase per rule from each client's round-0 model "
        f"(SFT, own-data share {cfg.round.transfer_local_fraction}). Own-test gain in accuracy points.",
        *sections,
        "## Spearman rank correlation with the own-test gain, across rules\n\n" + correlation_table(all_results),
    ]) + "\n"


def main() -> None:
    args = parse_args()
    overrides = [*args.overrides, *([f"seed={args.seed}"] if args.seed is not None else [])]
    cfg = load_config(str(resolve_scenario(args.config)), overrides)
    budget = args.budget or cfg.lada.budget
    command = "python benchmarks/reward_probe.py " + shlex.join(sys.argv[1:])
    started = time.perf_counter()
    server, clients = build(cfg)
    pool = candidate_pool(server)
    server.lm = None  # the server's part is done; free its memory
    bases, all_results = [], {}
    for client in clients:
        base, all_results[client.name] = probe_client(client, pool, budget, cfg.seed)
        bases.append(base)
    report = render(cfg, budget, command, pool, clients, bases, all_results)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
        log(f"wrote {args.out}")
    log(f"done in {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
