import time

import pytest

pytest.importorskip("flwr")

from fedlada.federation.flower import supernode  # noqa: E402


def test_the_supernode_loop_sees_sleeps_shortened_and_the_rest_of_time_unchanged(monkeypatch):
    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)
    quicker = supernode._QuickerTime()
    for _ in range(7):
        quicker.sleep(3)  # Flower's idle poll: backs off from POLL_SECONDS to IDLE_POLL_SECONDS
    assert slept == pytest.approx([0.2, 0.3, 0.45, 0.675, 1.0, 1.0, 1.0])
    assert (supernode.POLL_SECONDS, supernode.IDLE_POLL_SECONDS) == (0.2, 1.0)
    slept.clear()
    quicker.sleep(0.5)    # its wait for a reply: a message is being served, so the next idle poll is quick
    quicker.sleep(3)
    quicker.sleep(0.05)   # short sleeps stay as they are
    assert slept == pytest.approx([0.2, 0.2, 0.05])
    assert quicker.time is time.time and quicker.monotonic is time.monotonic


def test_main_patches_the_loop_flower_runs(monkeypatch):
    import flwr.supernode.cli as cli
    import flwr.supernode.start_client_internal as loop

    seen = {}
    monkeypatch.setattr(cli, "flower_supernode", lambda: seen.setdefault("time", loop.time))
    monkeypatch.setattr(loop, "time", time)
    supernode.main()
    assert isinstance(seen["time"], supernode._QuickerTime)
