"""`standalone`: no collaboration; the lower bound every method is measured against.

Each side learns only from its own data (the server too, when `round.server_local.steps > 0`),
so with LaDa attached both directions of LaDa's exchange are the only transfer.
"""

from fedlada.hosts.base import Host


class Standalone(Host):
    name = "standalone"
    server_learns = True
