"""The in-process transport: every request and reply is encoded, counted and decoded.

Encoding both ways means the receiver gets a copy, never a reference into the sender's objects,
so in-process runs obey the same isolation as a real deployment.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Protocol

from fedlada.federation.messages import Message, decode, encode


class Handler(Protocol):
    name: str

    def handle(self, msg: Message) -> Message: ...


class Channel:
    """Server-side view of the clients: `call(client, request) -> reply`, with byte accounting."""

    def __init__(self, clients: list[Handler], server_name: str = "server"):
        self.clients = clients
        self.server_name = server_name
        self.sent: dict[str, int] = defaultdict(int)
        self.received: dict[str, int] = defaultdict(int)

    def _count(self, sender: str, receiver: str, nbytes: int) -> None:
        self.sent[sender] += nbytes
        self.received[receiver] += nbytes

    def call(self, index: int, request: Message) -> Message:
        client = self.clients[index]
        data = encode(request)
        self._count(self.server_name, client.name, len(data))
        reply = client.handle(decode(data))
        data = encode(reply)
        self._count(client.name, self.server_name, len(data))
        return decode(data)

    def take_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Bytes sent/received per participant since the last call (one round's traffic)."""
        sent, received = dict(self.sent), dict(self.received)
        self.sent.clear()
        self.received.clear()
        return sent, received
