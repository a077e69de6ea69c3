"""Host frameworks: what one collaboration round does, written against a `RoundContext`.

A host only sees the server object (it runs on the server side) and a channel to the clients.
LaDa plugs in by deciding which public samples each pair exchanges and which loss transfers
reasoning (see docs/plugin.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from fedlada.config import RunConfig
from fedlada.federation.channel import Channel
from fedlada.federation.messages import LocalTrain, Message
from fedlada.federation.participants import Server
from fedlada.progress import UI


@dataclass
class RoundContext:
    round: int
    cfg: RunConfig
    server: Server
    channel: Channel
    ui: UI
    stats: dict[str, dict[str, float]] = field(default_factory=dict)
    selections: list[dict] = field(default_factory=list)

    def record(self, participant: str, values: dict[str, float]) -> None:
        self.stats.setdefault(participant, {}).update(values)

    def call(self, index: int, msg: Message) -> Message:
        """Send to one client; the scalars of its reply (`values`) are recorded under its name."""
        reply = self.channel.call(index, msg)
        if isinstance(getattr(reply, "values", None), dict):
            self.record(self.channel.clients[index].name, reply.values)
        return reply

    @property
    def num_clients(self) -> int:
        return len(self.channel.clients)


class Host:
    """Base host: each round, the host local step, then the host's exchange of public samples.

    `exchange` is the plug-in point: it decides which public samples each (server, client) pair
    uses and which loss transfers reasoning. `with_lada` replaces it with LaDa's (hosts/lada.py).
    `server_learns` says whether the host trains the server model from the clients; LaDa then
    runs its up direction (SLM -> LLM) as well.
    """

    name: ClassVar[str]
    server_learns: ClassVar[bool] = False

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        """Raise ValueError (a one-line config error) when the host cannot run this federation."""

    def local_step(self, ctx: RoundContext) -> None:
        rc = self.cfg.round
        if rc.local.steps:
            for i in range(ctx.num_clients):
                ctx.call(i, LocalTrain(ctx.round, rc.local.steps))
        if rc.server_local.steps:
            ctx.record("server", ctx.server.local_train(ctx.round, rc.server_local))

    def run_round(self, ctx: RoundContext) -> None:
        self.local_step(ctx)
        self.exchange(ctx)

    def exchange(self, ctx: RoundContext) -> None:
        """No exchange: the models learn only from their own data."""

    def deliver(self, ctx: RoundContext) -> None:
        """What the clients must receive from the local step when a plug-in replaces `exchange`
        (FedCoLLM: the FedAvg aggregate). Hosts whose exchange carries nothing else keep this empty."""

    def save_state(self, path) -> None:
        """Persist host state that must survive resume (LaDa's filters); stateless hosts keep none."""

    def load_state(self, path) -> None:
        pass
