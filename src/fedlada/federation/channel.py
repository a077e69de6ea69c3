"""The in-process transport: every request and reply is encoded, counted and decoded.

Encoding both ways means the receiver gets a copy, never a reference into the sender's objects,
so in-process runs obey the same isolation as a real deployment.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Protocol

from fedlada.federation.messages import Message, decode, encode


class Handler(Protocol):
    name: str

    def handle(self, msg: Message) -> Message: ...


class Channel:
    """Server-side view of the clients: `call(client, request) -> reply`, with byte accounting.

    Bytes are always the size of the project encoding (`encode`) of each request and reply, whatever
    carries them, so in-process and Flower runs report the same traffic. Transports other than this
    in-process one (the Flower channel) override `_send`, `save_clients` and `load_clients`.
    """

    def __init__(self, clients: list[Handler], server_name: str = "server"):
        self.clients = clients
        self.server_name = server_name
        self.sent: dict[str, int] = defaultdict(int)
        self.received: dict[str, int] = defaultdict(int)

    def _count(self, sender: str, receiver: str, nbytes: int) -> None:
        self.sent[sender] += nbytes
        self.received[receiver] += nbytes

    def call(self, index: int, request: Message) -> Message:
        name = self.clients[index].name
        data = encode(request)
        self._count(self.server_name, name, len(data))
        reply, nbytes = self._send(index, request, data)
        self._count(name, self.server_name, nbytes)
        return reply

    def _send(self, index: int, request: Message, data: bytes) -> tuple[Message, int]:
        """Deliver one encoded request; returns the decoded reply and the size of its encoding."""
        reply = encode(self.clients[index].handle(decode(data)))
        return decode(reply), len(reply)

    def save_clients(self, path: Path, round_: int) -> None:
        """Checkpoint every client after `round_` (in-process: under `path/<client name>`)."""
        for c in self.clients:
            c.save(path / c.name)

    def load_clients(self, path: Path, round_: int) -> None:
        """Restore every client to the checkpoint of `round_` written by `save_clients`."""
        for c in self.clients:
            c.load(path / c.name)

    def take_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Bytes sent/received per participant since the last call (one round's traffic)."""
        sent, received = dict(self.sent), dict(self.received)
        self.sent.clear()
        self.received.clear()
        return sent, received
