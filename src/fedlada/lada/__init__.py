"""LaDa as a plug-in: messages (messages.py), one transfer routine for both directions (transfer.py),
the client half (client.py) and the server half with `with_lada` (server.py)."""

from fedlada.lada.server import Lada, with_lada

__all__ = ["Lada", "with_lada"]
