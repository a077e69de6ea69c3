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
