"""`flower-supernode`, polling its SuperLink every 0.2 s instead of every 3 s when it has nothing to do.

Flower 1.42's SuperNode asks its SuperLink for a message, and when there is none it sleeps 3 s
(and 0.5 s between checks for its ClientApp's reply), both hard-coded in
`flwr.supernode.start_client_internal`. A fedlada round is a chain of short steps, each sent to
every client and awaited before the next one, so each step can wait up to 3 s before a node takes it,
on top of its work. `fedlada flower local` starts its SuperNodes through this
module, which caps those sleeps and is otherwise `flower-supernode` itself (same arguments).
A SuperNode of a real deployment, with round trips of its own, can stay the stock one.

    python -m fedlada.federation.flower.supernode --superlink 127.0.0.1:9092 --isolation process ...
"""

from __future__ import annotations

import time

POLL_SECONDS = 0.2


class _QuickerTime:
    """The `time` module as `start_client_internal` sees it, with every sleep capped at `POLL_SECONDS`."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(min(seconds, POLL_SECONDS))


def main() -> None:
    import flwr.supernode.start_client_internal as loop
    from flwr.supernode.cli import flower_supernode

    loop.time = _QuickerTime()
    flower_supernode()


if __name__ == "__main__":
    main()
