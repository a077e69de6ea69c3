"""The in-process transport: every request and reply is encoded, counted and decoded.

Encoding both ways means the receiver gets a copy, never a reference into the sender's objects,
so in-process runs obey the same isolation as a real deployment.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from fedlada.federation.messages import Message, decode, encode

if TYPE_CHECKING:
    from fedlada.federation.audit import Auditor


class Handler(Protocol):
    name: str

    def handle(self, msg: Message) -> Message: ...


class ClientError(Exception):
    """A client did not answer a message: its handler raised, or (Flower) no reply came in time.

    Raised by a channel only for failures on the client's side; `RoundContext.call` turns it into a
    skipped client or a `ClientFailure`, as `runtime.on_client_failure` says."""

    def __init__(self, client: str, message: str, cause: BaseException | str):
        self.client, self.message = client, message
        self.reason = cause if isinstance(cause, str) else one_line(cause)
        super().__init__(f"{client} on {message}: {self.reason}")


def one_line(err: BaseException) -> str:
    """`Type: first line of the message` of an exception."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


class Channel:
    """Server-side view of the clients: `call(client, request) -> reply`, with byte accounting.

    Bytes are always the size of the project encoding (`encode`) of each request and reply, whatever
    carries them, so in-process and Flower runs report the same traffic. Transports other than this
    in-process one (the Flower channel) override `_send`, `save_clients`, `load_clients` and
    `restore_client`.

    With an `auditor` (the runner sets one unless `runtime.audit` is false), every encoded request and
    reply is checked for private text before it is delivered (federation/audit.py).
    """

    def __init__(self, clients: list[Handler], server_name: str = "server", auditor: Auditor | None = None):
        self.clients = clients
        self.server_name = server_name
        self.auditor = auditor
        self.sent: dict[str, int] = defaultdict(int)
        self.received: dict[str, int] = defaultdict(int)

    def _count(self, sender: str, receiver: str, nbytes: int) -> None:
        self.sent[sender] += nbytes
        self.received[receiver] += nbytes

    def audit(self, data: bytes, sender: str, receiver: str, owner: str | None = None) -> None:
        """Check one encoded message; `owner`: a client's reply, checked against that client's data."""
        if self.auditor is not None:
            self.auditor.check(data, sender, receiver, owner)

    def private_matches(self, texts: list[str]) -> list[str | None]:
        """Per text, the private sample it reproduces (the audit's rules), or None; all None without an
        auditor. What the server uses to withhold its own generations that the audit would stop."""
        return self.auditor.matches(texts) if self.auditor is not None else [None] * len(texts)

    def call(self, index: int, request: Message) -> Message:
        """Send `request` to client `index` and return its reply; ClientError if the client failed."""
        data = self._outgoing(index, request)
        reply, nbytes = self._send(index, request, data)
        self._count(self.clients[index].name, self.server_name, nbytes)
        return reply

    def call_all(self, requests: dict[int, Message]) -> dict[int, Message | ClientError]:
        """One step of a round: each client its request; per client its reply, or the ClientError of a
        client that failed. In process the clients answer one after another, in index order; a channel
        whose clients live elsewhere (Flower) sends every request before it waits for a reply, so that
        the clients work at the same time and their round trips overlap."""
        results: dict[int, Message | ClientError] = {}
        for index, request in requests.items():
            try:
                results[index] = self.call(index, request)
            except ClientError as err:
                results[index] = err
        return results

    def _outgoing(self, index: int, request: Message) -> bytes:
        """`request` encoded, audited and counted, as it leaves for client `index`."""
        name = self.clients[index].name
        data = encode(request)
        self.audit(data, self.server_name, name)
        self._count(self.server_name, name, len(data))
        return data

    def _send(self, index: int, request: Message, data: bytes) -> tuple[Message, int]:
        """Deliver one encoded request; returns the decoded reply and the size of its encoding."""
        client = self.clients[index]
        try:
            reply = client.handle(decode(data))
        except Exception as err:  # the client's failure, not the server's: the policy decides
            raise ClientError(client.name, type(request).__name__, err) from err
        encoded = encode(reply)
        self.audit(encoded, client.name, self.server_name, owner=client.name)  # before the server sees it
        return decode(encoded), len(encoded)

    def save_clients(self, path: Path, round_: int) -> None:
        """Checkpoint every client after `round_` (in-process: under `path/<client name>`)."""
        for c in self.clients:
            c.save(path / c.name)

    def load_clients(self, path: Path, round_: int) -> None:
        """Restore every client to the checkpoint of `round_` written by `save_clients`."""
        for c in self.clients:
            c.load(path / c.name)

    def restore_client(self, index: int, path: Path, round_: int) -> None:
        """Put client `index` back to the checkpoint of `round_` under `path` (after it failed mid-round)."""
        c = self.clients[index]
        c.load(path / c.name)

    def take_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Bytes sent/received per participant since the last call (one round's traffic)."""
        sent, received = dict(self.sent), dict(self.received)
        self.sent.clear()
        self.received.clear()
        return sent, received
