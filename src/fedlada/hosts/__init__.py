"""Collaboration frameworks (hosts): what one round does, written against a `RoundContext`.

The methods a config can name, each host and its LaDa variant, are listed in `fedlada.methods`."""

from fedlada.hosts.base import Exchange, Host, RoundContext
from fedlada.hosts.distill import Distill
from fedlada.hosts.fedcollm import FedCoLLM
from fedlada.hosts.fedmkt import FedMKT
from fedlada.hosts.standalone import Standalone

__all__ = ["Distill", "Exchange", "FedCoLLM", "FedMKT", "Host", "RoundContext", "Standalone"]
