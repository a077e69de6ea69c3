"""Registry of collaboration frameworks, selected by the config key `method`."""

from fedlada.hosts.base import Host, RoundContext
from fedlada.hosts.distill import Distill
from fedlada.hosts.fedcollm import FedCoLLM
from fedlada.hosts.fedmkt import FedMKT
from fedlada.lada import with_lada
from fedlada.hosts.standalone import Standalone

_BASE = (Standalone, Distill, FedMKT, FedCoLLM)
HOSTS: dict[str, type[Host]] = {h.name: h for h in (*_BASE, *map(with_lada, _BASE))}

__all__ = ["HOSTS", "Host", "RoundContext", "with_lada"]
