"""Split one data source into the federation's sets: G, P, each client's D_k and T_k, and T_G.

Design choices:

- Every set is drawn per domain from one plan, in a fixed priority order: global test, client
  tests, client train, public, server corpus. Tests come first so that deduplication never thins
  them; across ALL sets no prompt appears twice (the evaluation and the privacy story both need
  that: a test question seen in training, or a private question also in the public pool, would
  inflate results). Procedural sources draw with distinct derived seeds per (set, domain, attempt)
  and drop prompts already taken, drawing again until the size is met; file sources slice one
  shuffled, deduplicated pool.
- `partition="domain"`: client k owns `client_domains[k]` (default: round-robin over the domains)
  and its train/test sets are split evenly over them. `partition="dirichlet"`: for every domain, a
  Dirichlet(alpha) draw splits it over the clients (the usual label-skew scheme); client k's domain
  mix is its column of shares, normalised, and its fixed-size train/test sets follow that mix.
  With one domain (a plain GSM8K file) every mix is [1.0], so Dirichlet degenerates to an even IID
  split, as does `domain` with more clients than domains (clients then share a domain's pool).
- P and G are split evenly over all domains (P by `public_weights`, G by `server_weights` when given) (P's solutions are kept, but the server must use only
  questions and gold answers). For math-mix each set has its own digit range (clients see short
  operands, tests, P and G longer ones: the clients' room to grow is length generalisation).
- A data file too small for the requested sizes shrinks every set of the short domain by the same
  factor, with a warning; a set that would end up empty is a ValueError.
- Each set is shuffled at the end (seeded), so a prefix of it is not one domain.
"""

from __future__ import annotations

import random
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fedlada.config import DataConfig
from fedlada.data import mathmix
from fedlada.data.files import load_file_strict
from fedlada.data.types import Example
from fedlada.seeding import derive_seed

_DRAW_ATTEMPTS = 20
_DEFAULT_GSM_TEMPLATE_COUNT = 6

Draw = Callable[[str, int, tuple[int, int] | None, int, str], list[Example]]


@dataclass
class ClientData:
    train: list[Example]
    test: list[Example]
    domains: list[str]
    heldout: list[Example] = field(default_factory=list)  # private, never trained on: LaDa's reward slice


@dataclass
class FederationData:
    server_corpus: list[Example]  # G
    public: list[Example]  # P: questions + gold answers (solutions present, not to be relied on)
    clients: list[ClientData]
    global_test: list[Example]  # T_G over all domains
    domains: list[str]


@dataclass(frozen=True)
class _Request:
    """`count` examples of `domain` for the set named `part` (e.g. `client-0-train`)."""

    part: str
    domain: str
    count: int
    digits: tuple[int, int] | None


def split_count(total: int, weights: list[float]) -> list[int]:
    """`total` split in proportion to `weights` by largest remainder (ties to the first)."""
    shares = np.asarray(weights, dtype=float)
    quotas = total * shares / shares.sum()
    counts = np.floor(quotas).astype(int)
    order = np.argsort(-(quotas - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts.tolist()


def dirichlet_mixtures(num_clients: int, num_domains: int, alpha: float, seed: int) -> np.ndarray:
    """Row k: client k's domain mix (sums to 1), from per-domain Dirichlet(alpha) client shares."""
    rng = np.random.default_rng(derive_seed(seed, "data", "dirichlet"))
    shares = rng.dirichlet(np.full(num_clients, alpha), size=num_domains).T  # (clients, domains)
    totals = shares.sum(axis=1, keepdims=True)
    # A client whose shares all underflow to 0 (tiny alpha) gets a uniform mix instead of NaN.
    uniform = np.full_like(shares, 1.0 / num_domains)
    return np.divide(shares, totals, out=uniform, where=totals > 0)


def _client_mixtures(
    cfg: DataConfig, domains: list[str], num_clients: int, seed: int, name: Callable[[str], str]
) -> list[list[float]]:
    """Per client, the weight of each domain in its train/test sets."""
    if cfg.partition == "dirichlet":
        return dirichlet_mixtures(num_clients, len(domains), cfg.dirichlet_alpha, seed).tolist()
    if cfg.client_domains is None:
        if len(domains) >= num_clients:
            owned = [domains[k::num_clients] for k in range(num_clients)]
        else:
            owned = [[domains[k % len(domains)]] for k in range(num_clients)]
    else:
        if len(cfg.client_domains) != num_clients:
            raise ValueError(f"data.client_domains has {len(cfg.client_domains)} entries for {num_clients} clients")
        owned = []
        for k, listed in enumerate(cfg.client_domains):
            if not listed:
                raise ValueError(f"data.client_domains[{k}] is empty")
            names = [name(d) for d in listed]
            unknown = [d for d in names if d not in domains]
            if unknown:
                raise ValueError(f"data.client_domains[{k}]: unknown domain {unknown[0]!r}; domains are {domains}: "
                                 "list some of these per client, or set data.client_domains=null (round-robin)")
            owned.append(names)
    return [[1.0 if d in client_domains else 0.0 for d in domains] for client_domains in owned]


def _plan(cfg: DataConfig, domains: list[str], mixtures: list[list[float]], with_digits: bool) -> list[_Request]:
    """All requests in priority order (tests, client train, public, server corpus)."""
    ranges = cfg.math_mix.model_dump() if with_digits else {}
    requests = [_Request("global-test", d, cfg.global_test_per_domain, ranges.get("test_digits")) for d in domains]

    def spread(part: str, total: int, weights: list[float], part_digits) -> list[_Request]:
        counts = split_count(total, weights)
        return [_Request(part, d, n, part_digits) for d, n in zip(domains, counts) if n > 0]

    for k, mix in enumerate(mixtures):
        requests += spread(f"client-{k}-test", cfg.client_test, mix, ranges.get("test_digits"))
    for k, mix in enumerate(mixtures):
        requests += spread(f"client-{k}-train", cfg.client_train, mix, ranges.get("client_digits"))
    requests += spread("public", cfg.public, _mix("public_weights", cfg.public_weights, domains), ranges.get("public_digits"))
    requests += spread("server-corpus", cfg.server_corpus, _mix("server_weights", cfg.server_weights, domains),
                       ranges.get("server_digits"))
    # Last, so that adding held-out slices changes no other set (and no cached base model). They follow
    # the distribution the client is evaluated on (math-mix: the test digits), not the one it trains on:
    # a slice of what it already masters has a near-zero loss and says nothing about what would help it.
    if cfg.client_heldout:
        for k, mix in enumerate(mixtures):
            requests += spread(f"client-{k}-heldout", cfg.client_heldout, mix, ranges.get("test_digits"))
    return requests


def _mix(key: str, weights: dict[str, float] | None, domains: list[str]) -> list[float]:
    """Per-domain weights of a set (`data.public_weights`, `data.server_weights`); even when None."""
    if weights is None:
        return [1.0] * len(domains)
    unknown = set(weights) - set(domains)
    if unknown or sum(weights.values()) <= 0:
        raise ValueError(f"data.{key}: keys must be among the domains {domains} with a positive sum")
    return [weights.get(d, 0.0) for d in domains]


def _draw_distinct(requests: list[_Request], draw: Draw, seed: int) -> dict[str, list[Example]]:
    """Fulfil requests from a procedural source, never reusing a prompt."""
    parts: dict[str, list[Example]] = defaultdict(list)
    seen: set[str] = set()
    for request in requests:
        chosen: list[Example] = []
        for attempt in range(_DRAW_ATTEMPTS):
            need = request.count - len(chosen)
            batch_seed = derive_seed(seed, "data", request.part, request.domain, attempt)
            prefix = f"{request.part}-{request.domain}-{attempt}"
            for example in draw(request.domain, need + need // 4 + 8, request.digits, batch_seed, prefix):
                if example.prompt not in seen and len(chosen) < request.count:
                    seen.add(example.prompt)
                    chosen.append(example)
            if len(chosen) == request.count:
                break
        else:
            raise ValueError(
                f"data: only {len(chosen)} of {request.count} distinct {request.domain} problems for "
                f"{request.part}"
                + (f" with {request.digits[0]}-{request.digits[1]} digits" if request.digits else "")
                + " remain after the other sets took theirs; ask for fewer examples or a wider range"
            )
        parts[request.part] += chosen
    return parts


def _slice_pool(requests: list[_Request], examples: list[Example], path: str, seed: int) -> dict[str, list[Example]]:
    """Fulfil requests from a file's examples: dedupe, shuffle, shrink if short, slice."""
    unique, seen = [], set()
    for example in examples:
        if example.prompt not in seen:
            seen.add(example.prompt)
            unique.append(example)
    if len(unique) < len(examples):
        dropped = len(examples) - len(unique)
        warnings.warn(f"data: {path}: dropped {dropped} entries whose question repeats an earlier one")
    random.Random(derive_seed(seed, "data", "shuffle")).shuffle(unique)
    pools: dict[str, list[Example]] = defaultdict(list)
    for example in unique:
        pools[example.domain].append(example)

    demand = Counter()
    for request in requests:
        if not request.part.endswith("-heldout"):  # held-out slices take what is left, never shrink others
            demand[request.domain] += request.count
    scale = {d: min(1.0, len(pools[d]) / demand[d]) for d in demand if demand[d]}
    for domain, factor in scale.items():
        if factor < 1.0:
            warnings.warn(
                f"data: {path} has {len(pools[domain])} usable {domain} examples for {demand[domain]} "
                f"requested; every set's share of {domain} shrinks to {factor:.1%}"
            )
    parts: dict[str, list[Example]] = defaultdict(list)
    taken = Counter()
    for request in requests:
        start = taken[request.domain]
        if request.part.endswith("-heldout"):
            count = min(request.count, len(pools[request.domain]) - start)
        else:
            count = int(request.count * scale[request.domain])
        parts[request.part] += pools[request.domain][start : start + count]
        taken[request.domain] += count
    return parts


def _source(cfg: DataConfig) -> tuple[list[str], Callable[[str], str], Draw | None, list[Example] | None]:
    """(domains, domain-name normaliser, draw function or None, file examples or None) for cfg.source."""
    if cfg.source == "math-mix":
        domains = list(cfg.domains or mathmix.DEFAULT_TASKS)
        unknown = [d for d in domains if d not in mathmix.TASKS]
        if unknown:
            raise ValueError(f"data.domains: unknown math-mix task {unknown[0]!r}; choose from {mathmix.TASKS}")
        return domains, str, mathmix.generate, None
    if cfg.source == "gsm-symbolic":
        from fedlada.data import gsm_symbolic  # imports reasoning-gym (~2 s): only for this source

        def name(domain: str) -> str:
            return gsm_symbolic.domain_name(gsm_symbolic.template_index(domain))

        templates = cfg.domains or [str(t) for t in gsm_symbolic.TEMPLATES[:_DEFAULT_GSM_TEMPLATE_COUNT]]

        def draw_gsm(domain, n, digits, draw_seed, prefix):
            return gsm_symbolic.generate(gsm_symbolic.template_index(domain), n, draw_seed, prefix)

        return [name(t) for t in templates], name, draw_gsm, None
    report = load_file_strict(cfg.path, cfg.source)
    if report.skipped:
        counts = ", ".join(f"{n} {reason}" for reason, n in sorted(report.skipped.items()))
        warnings.warn(f"data: {cfg.path}: skipped {counts}")
    available = sorted({example.domain for example in report.examples})
    domains = list(cfg.domains or available)
    missing = [d for d in domains if d not in available]
    if missing:
        # Typically the math-mix domains of a packaged config carried over to a data file.
        raise ValueError(f"data.domains: {cfg.path} has no examples of domain {missing[0]!r}; it has {available}: "
                         "set data.domains (and data.client_domains) to some of these, or data.domains=null "
                         "data.client_domains=null to use all of them")
    examples = [example for example in report.examples if example.domain in domains]
    return domains, str, None, examples


def build_federation_data(cfg: DataConfig, num_clients: int, seed: int) -> FederationData:
    """All data sets of a run; the same (cfg, num_clients, seed) always gives the same result."""
    if num_clients < 1:
        raise ValueError(f"need at least one client, got {num_clients}")
    domains, name, draw, file_examples = _source(cfg)
    if len(set(domains)) < len(domains):
        raise ValueError(f"data.domains lists a domain twice: {domains}")
    mixtures = _client_mixtures(cfg, domains, num_clients, seed, name)
    requests = _plan(cfg, domains, mixtures, with_digits=cfg.source == "math-mix")
    if file_examples is None:
        parts = _draw_distinct(requests, draw, seed)
    else:
        parts = _slice_pool(requests, file_examples, cfg.path, seed)

    part_names = ["global-test", "public", "server-corpus"]
    part_names += [f"client-{k}-{kind}" for k in range(num_clients) for kind in ("train", "test")]
    for part in part_names:
        if not parts[part]:
            raise ValueError(f"data: the {part} set would be empty; the source is too small for the requested sizes")
        random.Random(derive_seed(seed, "data", "order", part)).shuffle(parts[part])

    clients = []
    for k in range(num_clients):
        train, test = parts[f"client-{k}-train"], parts[f"client-{k}-test"]
        heldout = parts.get(f"client-{k}-heldout", [])
        random.Random(derive_seed(seed, "data", "order", f"client-{k}-heldout")).shuffle(heldout)
        present = {example.domain for example in train + test}
        clients.append(ClientData(train=train, test=test, domains=[d for d in domains if d in present], heldout=heldout))
    return FederationData(
        server_corpus=parts["server-corpus"],
        public=parts["public"],
        clients=clients,
        global_test=parts["global-test"],
        domains=domains,
    )
