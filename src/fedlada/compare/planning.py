"""What a comparison runs: scenarios, variant specs, and one job per (variant, seed) with its run directory.

A variant is a method spec, `METHOD[:key=value]...` (`distill+lada:filter=oracle`; a key without a
dot is a LaDa setting), so ablations are compared like methods.

Layout: `OUT/VARIANT/seed-S/` (VARIANT: the method's name, or a filesystem-safe slug of the spec) is
a plain run directory (config.yaml, metrics.jsonl, report.md) plus `log.txt` (the run's output),
`attempts.json` (wall seconds and exit code of every process that worked on it) and, once it has
finished, `done.json`. Finished runs are reused; an
unfinished one with metrics is continued with `fedlada run --out DIR --resume`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from fedlada.config import PACKAGED_CONFIGS, ConfigError, RunConfig, config_from_dict, load_config
from fedlada.methods import results_difference
from fedlada.report import read_rows

SCENARIOS = PACKAGED_CONFIGS / "scenarios"
DONE, ATTEMPTS, LOG = "done.json", "attempts.json", "log.txt"
RESERVED = ("method", "seed")  # set per run by compare; a --set of these would be ambiguous


def finished_round(d: Path) -> int:
    """The last round in a run directory's metrics.jsonl; -1 if none."""
    try:
        return max((r["round"] for r in read_rows(d)), default=-1)
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return -1


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
        """done (metrics up to the last round) | partial (continue with --resume, also to more rounds) | new."""
        if finished_round(self.dir) == self.cfg.rounds:
            return "done"
        has = (self.dir / "metrics.jsonl").exists() and (self.dir / "config.yaml").exists()
        return "partial" if has else "new"


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
                diff = results_difference(config_from_dict(yaml.safe_load(saved.read_text())), cfg)
                if diff:
                    raise ConfigError(f"{d} holds a run of another config ({diff}); pass another --out or remove it")
                reached = finished_round(d)
                if reached > cfg.rounds:
                    raise ConfigError(f"{d} holds a run of {reached} rounds, more than rounds={cfg.rounds}; "
                                      "pass another --out or remove it")
            jobs.append(Job(v, s, d, cfg, scenario, sets))
    return jobs
