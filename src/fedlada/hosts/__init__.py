"""Registry of collaboration frameworks, selected by the config key `method`."""

from fedlada.hosts.base import Exchange, Host, RoundContext
from fedlada.hosts.distill import Distill
from fedlada.hosts.fedcollm import FedCoLLM
from fedlada.hosts.fedmkt import FedMKT
from fedlada.hosts.standalone import Standalone

_BASE = (Standalone, Distill, FedMKT, FedCoLLM)


def __getattr__(name: str):
    """`HOSTS` (each host and its `+lada` variant), built on first use: the LaDa package builds on the
    hosts' base types (`Exchange`), so it can only be imported once they are."""
    if name == "HOSTS":
        from fedlada.lada import with_lada

        globals()["HOSTS"] = {h.name: h for h in (*_BASE, *map(with_lada, _BASE))}
        return globals()["HOSTS"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["HOSTS", "Exchange", "Host", "RoundContext"]
