"""`flower-supernode`, polling its SuperLink every 0.2 s instead of every 3 s when it has just served a
message, and backing off to once a second while it stays idle.

Flower 1.42's SuperNode asks its SuperLink for a message, and when there is none it sleeps 3 s
(and 0.5 s between checks for its ClientApp's reply), both hard-coded in
`flwr.supernode.start_client_internal`. A fedlada round is a chain of short steps, each sent to
every client and awaited before the next one, so each step can wait up to 3 s before a node takes it,
on top of its work. `fedlada flower local` starts its SuperNodes through this module, which is
`flower-supernode` itself (same arguments) with those sleeps shortened. The idle poll backs off
(0.2, 0.3, 0.45, ... s, at most `IDLE_POLL_SECONDS`) because on one machine every poll costs the
SuperLink CPU that the node computing at that moment needs: a node that answered early waits for the
others, and polling the SuperLink five times a second through their long steps can slow their torch
phases (docs/deploy.md). A SuperNode of a real deployment, with round trips of its own, can stay the
stock one.

    python -m fedlada.federation.flower.supernode --superlink 127.0.0.1:9092 --isolation process ...
"""

from __future__ import annotations

import time

POLL_SECONDS = 0.2  # the first idle poll after a message, and every wait for a reply
IDLE_POLL_SECONDS = 1.0  # the idle poll once the node has been idle for a while
FLOWER_IDLE_SLEEP = 3  # what Flower's loop sleeps after an empty pull from the SuperLink


class _QuickerTime:
    """The `time` module as `start_client_internal` sees it, with its sleeps shortened: the idle poll
    backs off from `POLL_SECONDS` to `IDLE_POLL_SECONDS` and starts again from `POLL_SECONDS` after any
    other sleep (a wait for the ClientApp's reply: the node has a message); other sleeps are capped at
    `POLL_SECONDS`."""

    def __init__(self):
        self.idle_polls = 0

    def __getattr__(self, name):
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        if seconds >= FLOWER_IDLE_SLEEP:
            wait = min(POLL_SECONDS * 1.5**self.idle_polls, IDLE_POLL_SECONDS)
            self.idle_polls += 1
        else:
            wait = min(seconds, POLL_SECONDS)
            self.idle_polls = 0
        time.sleep(wait)


def main() -> None:
    import flwr.supernode.start_client_internal as loop
    from flwr.supernode.cli import flower_supernode

    loop.time = _QuickerTime()
    flower_supernode()


if __name__ == "__main__":
    main()
