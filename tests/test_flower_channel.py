"""The Flower channel sends a step's requests to every node before it waits for any reply, so that the
clients' round trips overlap; replies are matched to their clients whatever order they come in."""

from __future__ import annotations

import pytest

pytest.importorskip("flwr", reason="the Flower tests need the flower extra (pip install -e '.[dev]')")

from flower_helpers import StandInGrid  # noqa: E402

from fedlada.federation.channel import ClientError  # noqa: E402
from fedlada.federation.flower.apps import FlowerChannel  # noqa: E402
from fedlada.federation.flower.records import to_record  # noqa: E402
from fedlada.federation.messages import Evaluate, Report  # noqa: E402


@pytest.fixture(autouse=True)
def inside_a_run(monkeypatch):
    """Flower messages are made inside a ServerApp's run, which these tests do not have."""
    from flwr.supercore.task_identity import TaskIdentity

    for attr in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, attr, 1)


class Node:
    """A reply naming the node the message went to; `silent` nodes never answer."""

    def __init__(self, silent=()):
        self.silent = set(silent)

    def __call__(self, msg):
        node = msg.metadata.dst_node_id
        if node in self.silent:
            return None
        reply = type("Reply", (), {"has_error": lambda self: False})()
        reply.content = to_record(Report({"node": float(node)}))
        return reply


def test_every_request_leaves_before_any_reply_is_awaited_and_replies_find_their_clients():
    grid = StandInGrid(Node())
    channel = FlowerChannel(grid, node_ids=[10, 11, 12], names=["client-0", "client-1", "client-2"])
    replies = channel.call_all({0: Evaluate(1), 1: Evaluate(1), 2: Evaluate(1)})
    assert grid.calls == ["push", "pull"] and [m.metadata.dst_node_id for m in grid.pushed] == [10, 11, 12]
    assert list(replies) == [0, 1, 2] and [r.values["node"] for r in replies.values()] == [10.0, 11.0, 12.0]
    sent, received = channel.take_counts()
    assert sent["server"] > 0 and all(received[f"client-{i}"] > 0 and sent[f"client-{i}"] > 0 for i in range(3))


def test_a_node_that_does_not_answer_in_time_fails_alone():
    channel = FlowerChannel(StandInGrid(Node(silent={11})), node_ids=[10, 11], names=["client-0", "client-1"], timeout=0.3)
    replies = channel.call_all({0: Evaluate(2), 1: Evaluate(2)})
    assert replies[0].values["node"] == 10.0
    assert isinstance(replies[1], ClientError) and "runtime.client_timeout=0.3 s" in replies[1].reason
