"""The methods a config can name, and the one place that registers what they add to the protocol.

A method is a host (`fedlada.hosts`) or a host with LaDa plugged in (`X+lada`, `fedlada.lada`). The
config layer below knows none of them: `check` validates `cfg.method` and the host's own
requirements, `build_host` makes the host, and `register_protocol` registers every method's message
types (so the codec can decode them) and the run's client handlers. The in-process runner and the
Flower apps call it before the first message flows, so that nothing depends on what happened to be
imported.
"""

from __future__ import annotations

from fedlada.config import ConfigError, RunConfig
from fedlada.federation.messages import Message, register
from fedlada.federation.participants import register_handlers
from fedlada.hosts import Distill, FedCoLLM, FedMKT, Host, Standalone
from fedlada.lada import with_lada

HOSTS = (Standalone, Distill, FedMKT, FedCoLLM)
METHODS: dict[str, type[Host]] = {h.name: h for h in (*HOSTS, *map(with_lada, HOSTS))}


def check(cfg: RunConfig) -> RunConfig:
    """`cfg` itself once its method exists and its host can run this federation; else a one-line ConfigError."""
    host = METHODS.get(cfg.method)
    if host is None:
        raise ConfigError(f"method: unknown {cfg.method!r}; choose one of {', '.join(sorted(METHODS))}")
    try:
        host.check_config(cfg)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return cfg


# LaDa's keys that only a method that trains the server reads
UP_DIRECTION = {"host_up", "up_loss", "up_reward", "up_budget", "up_min_pairs", "up_teacher"}


def results_difference(saved: RunConfig, wanted: RunConfig) -> str | None:
    """The first key, as `key: saved -> wanted`, where the two configs could give different results; None
    if they cannot. A resumed run and a reused compare run are held to it, so that neither refuses a change
    the method never reads: the number of rounds (it only bounds the loop, so a run's first rounds are those
    of a longer one: a finished run may be extended; the runner refuses to cut one), the runtime settings,
    the server's transfer rate and LaDa's up-direction settings where the method never trains the server,
    LaDa's settings where the method has no LaDa, and LaDa's reward and EE-Net's cold start under a fixed
    selection rule (oracle, random, loss, none: the reward is only logged)."""
    exclude: dict = {"runtime": True, "rounds": True}
    lada: set[str] = set()
    if not METHODS[wanted.method].server_learns:
        exclude["server"] = {"transfer_lr"}
        lada |= UP_DIRECTION
    if not wanted.method.endswith("+lada"):
        exclude["lada"] = True
    else:
        if wanted.lada.filter != "eenet" and saved.lada.filter == wanted.lada.filter:
            lada |= {"reward", "cold_start"}
        if lada:
            exclude["lada"] = lada
    a = dict(_flat(saved.model_dump(mode="json", by_alias=True, exclude=exclude)))
    b = dict(_flat(wanted.model_dump(mode="json", by_alias=True, exclude=exclude)))
    for key in dict.fromkeys([*a, *b]):
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            return f"{key}: {a.get(key, '<unset>')!r} -> {b.get(key, '<unset>')!r}"
    return None


def _flat(d, prefix=""):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _flat(v, f"{prefix}{k}.")
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _flat(v, f"{prefix}{i}.")
    else:
        yield prefix.rstrip("."), d


def build_host(cfg: RunConfig) -> Host:
    return METHODS[check(cfg).method](cfg)


def register_protocol(method: str, *extra: type[Message]) -> None:
    """Register every method's message types and `extra` ones (the Flower apps' control messages), so that
    whatever arrives can be decoded, and the client handlers of `method`, the run's (two hosts may answer
    the same message type differently). Idempotent: the runner and each Flower app call it before the
    first message."""
    register(*extra)
    for host in METHODS.values():
        register(*host.messages)
    register_handlers(METHODS[method].client_handlers)
