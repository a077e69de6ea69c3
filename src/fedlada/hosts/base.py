"""Host frameworks: what one collaboration round does, written against a `RoundContext`.

A host only sees the server object (it runs on the server side) and a channel to the clients.
Its exchange has two named points, and LaDa plugs into both (docs/plugin.md):

- `select`: which public samples each (server, client) pair exchanges, in each direction (an `Exchange`);
  a host sends every candidate both ways, LaDa's filters choose;
- `transfer`: what the learners minimise on those samples, the host's own loss (FedMKT's KD,
  FedCoLLM's mutual distillation, distill's SFT); LaDa adds DARD to it, or replaces it
  (`lada.host_loss`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from fedlada.config import RunConfig
from fedlada.data.types import Example
from fedlada.errors import ClientFailure, FedladaError
from fedlada.federation.channel import Channel, ClientError
from fedlada.federation.messages import LocalTrain, Message
from fedlada.federation.participants import ClientHandler, Server
from fedlada.progress import UI


@dataclass
class RoundContext:
    """One round as a host sees it: the server, the channel to the clients, and what gets recorded.

    Failing clients (`runtime.on_client_failure`): with `fail` a client's failure ends the run with a
    `ClientFailure` naming client, round and message. With `skip` the client is out of the rest of the
    round: `call` returns None for the failing message and for every later one to that client in the
    round (nothing is sent), and `failed` records why. Hosts must treat a `None` reply as "this client
    did not answer" (or iterate `active_clients()`); the runner puts failed clients back to their last
    checkpoint before the next round.
    """

    round: int
    cfg: RunConfig
    server: Server
    channel: Channel
    ui: UI
    stats: dict[str, dict[str, float]] = field(default_factory=dict)
    selections: list[dict] = field(default_factory=list)
    failed: dict[int, ClientError] = field(default_factory=dict)  # client index -> why, this round

    def record(self, participant: str, values: dict[str, float]) -> None:
        self.stats.setdefault(participant, {}).update(values)

    def call(self, index: int, msg: Message) -> Message | None:
        """Send to one client; the scalars of its reply (`values`) are recorded under its name.

        None when the client failed in this round (only with `runtime.on_client_failure=skip`)."""
        return self.call_all({index: msg})[index]

    def call_all(self, requests: dict[int, Message]) -> dict[int, Message | None]:
        """`call` for several clients at once (`Channel.call_all`: under Flower they work in parallel).
        Replies and failures are taken in index order, so a run's records do not depend on which client
        answered first."""
        results = self.channel.call_all({i: msg for i, msg in requests.items() if i not in self.failed})
        replies: dict[int, Message | None] = {}
        for index in sorted(requests):
            reply = results.get(index)
            if isinstance(reply, ClientError):
                self._client_failed(index, reply)
                reply = None
            elif isinstance(getattr(reply, "values", None), dict):
                self.record(self.channel.clients[index].name, reply.values)
            replies[index] = reply
        return replies

    def call_active(self, make: Callable[[int], Message]) -> dict[int, Message]:
        """`make(i)` to every client still in the round, at once; the replies of those that answered."""
        replies = self.call_all({i: make(i) for i in self.active_clients()})
        return {i: r for i, r in replies.items() if r is not None}

    def _client_failed(self, index: int, err: ClientError) -> None:
        where = f"{err.client} failed in round {self.round} on {err.message}: {err.reason}"
        if isinstance(err.__cause__, FedladaError):  # the data, config or files, not the client: the same every round
            raise ClientFailure(where) from err
        if self.cfg.runtime.on_client_failure != "skip":
            raise ClientFailure(f"{where} (runtime.on_client_failure=skip would leave it out of the round; "
                                "--resume continues from the last finished round)") from err
        if self.round == 0:
            raise ClientFailure(f"{where}; a client cannot be skipped in round 0: it has no saved state to "
                                "come back from") from err
        self.failed[index] = err
        self.ui.log(f"round {self.round}: {where}; left out of this round")
        if len(self.failed) == self.num_clients:
            raise ClientFailure(f"every client failed in round {self.round} (last: {where})") from err

    def active_clients(self) -> list[int]:
        """Indices of the clients that have not failed in this round (so far)."""
        return [i for i in range(self.num_clients) if i not in self.failed]

    @property
    def num_clients(self) -> int:
        return len(self.channel.clients)


@dataclass
class Exchange:
    """Which public samples each (server, client) pair exchanges in one round: `down[k]` the ids the
    server teaches client k on, `up[k]` the ids client k teaches the server on (both in pool order).
    `server_also`: ids the host's loss teaches the server on with no client's knowledge (its own
    distributions and the gold solution), beside the `up` ones. `server_selective`: a host that distils
    a teacher into the server takes the teacher's distribution only on the samples whose gold solution
    it fits better than the server's own (FedMKT's `greater` selection), so that the server learns only
    what it lacks; the hosts' own choice is False, LaDa's `lada.up_teacher`."""

    pool: list[Example]
    down: dict[int, list[str]]
    up: dict[int, list[str]]
    server_also: list[str] = field(default_factory=list)
    server_selective: bool = False

    @classmethod
    def everything(cls, pool: list[Example], clients: list[int], up: bool) -> Exchange:
        """The hosts' own choice: every candidate to every client, and back where the server learns."""
        ids = [e.id for e in pool]
        return cls(pool, {k: ids for k in clients}, {k: ids for k in clients} if up else {})

    def examples(self, ids: set[str] | list[str]) -> list[Example]:
        """The pool's samples among `ids`, in pool order."""
        wanted = set(ids)
        return [e for e in self.pool if e.id in wanted]

    def union(self, *directions: str) -> list[Example]:
        """The pool's samples exchanged in any of `directions` ("down", "up") with any client, in pool order."""
        sides = [self.down if d == "down" else self.up for d in directions]
        return self.examples({sid for side in sides for ids in side.values() for sid in ids})

    def server_samples(self) -> list[Example]:
        """What the host's loss teaches the server on: the `up` samples and `server_also`, in pool order."""
        return self.examples({*self.server_also, *(e.id for e in self.union("up"))})


class Host:
    """Base host: each round, the host local step, then its exchange, `transfer(select())`.

    `server_learns` says whether the host trains the server model from the clients; LaDa then
    runs its up direction (SLM -> LLM) as well. `lada_host_loss` is what `X+lada` does with the
    host's loss by default: `add` DARD to it (FedMKT's KD and FedCoLLM's distillation teach from
    logits, which DARD does not), or `replace` it (distill's SFT on teacher paths is what DARD
    stands for).
    """

    name: ClassVar[str]
    server_learns: ClassVar[bool] = False
    lada_host_loss: ClassVar[str] = "add"
    messages: ClassVar[tuple[type[Message], ...]] = ()  # the host's own message types, and
    client_handlers: ClassVar[dict[type[Message], ClientHandler]] = {}  # its clients' verbs (fedlada.methods registers both)

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        """Raise ValueError (a one-line config error) when the host cannot run this federation."""

    def local_step(self, ctx: RoundContext) -> None:
        rc = self.cfg.round
        if rc.local.steps:
            ctx.call_active(lambda i: LocalTrain(ctx.round, rc.local.steps))
        if rc.server_local.steps:
            ctx.record("server", ctx.server.local_train(ctx.round, rc.server_local))

    def run_round(self, ctx: RoundContext) -> None:
        self.local_step(ctx)
        self.exchange(ctx)

    def exchange(self, ctx: RoundContext) -> None:
        self.transfer(ctx, self.select(ctx))

    def select(self, ctx: RoundContext) -> Exchange:
        """Every candidate of the round, to every client (and back, where the server learns)."""
        return Exchange.everything(ctx.server.candidate_pool(ctx.round), ctx.active_clients(), self.server_learns)

    def transfer(self, ctx: RoundContext, exchange: Exchange) -> None:
        """No transfer: the models learn only from their own data."""

    def deliver(self, ctx: RoundContext) -> None:
        """What the clients must receive from the local step when a plug-in replaces `transfer`
        (FedCoLLM: the FedAvg aggregate). Hosts whose transfer carries nothing else keep this empty."""

    def save_state(self, path) -> None:
        """Persist host state that must survive resume (LaDa's filters); stateless hosts keep none."""

    def load_state(self, path) -> None:
        pass
