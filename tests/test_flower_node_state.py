"""A SuperNode's state against the server's checkpoint, and the client a long-lived ClientApp keeps.

No Flower processes: `Node` is what every ClientApp process (per message, or the long-lived worker)
hands each message to. The state directory is the source of truth; a kept client is used only while
the directory holds what it saved.
"""

from __future__ import annotations

import json

import pytest

from fedlada.config import config_from_dict
from fedlada.errors import CheckpointError
from fedlada.federation.flower.node import Node, NodeSettings, Restore, read_stamp
from fedlada.federation.messages import Evaluate, LocalTrain, Prepare


def _node(tiny_config_dict, tmp_path, log=None):
    from fedlada.progress import UI

    class Log(UI):
        def log(self, message):
            (log if log is not None else []).append(message)

    cfg = config_from_dict(tiny_config_dict)
    settings = NodeSettings(partition_id=0, num_partitions=2, state_dir=tmp_path / "nodes" / "run")
    return Node(cfg, settings, Log()), settings.state_dir / "client-0"


def _two_rounds(node):
    node.handle(Prepare())
    node.handle(Evaluate(0))
    node.handle(LocalTrain(1, 3))
    node.handle(Evaluate(1))
    return node.snapshot


def test_a_kept_client_is_reused_only_while_the_state_directory_holds_what_it_saved(tiny_config_dict, tmp_path):
    node, root = _node(tiny_config_dict, tmp_path)
    _two_rounds(node)
    assert node.reloads == 0  # Prepare built it; every later message used the one in memory
    # Another process (a ClientApp started for one message, or a Restore) changed the directory:
    # the kept client is stale and must not be used.
    stamp = read_stamp(root / "current")
    stamp["stamp"] = "written-elsewhere"
    (root / "current" / "stamp.json").write_text(json.dumps(stamp))
    node.handle(Evaluate(1))
    assert node.reloads == 1
    node.handle(Evaluate(1))
    assert node.reloads == 1  # loaded once, then kept again


def test_a_node_ahead_of_the_checkpoint_is_reloaded_from_the_checkpointed_round(tiny_config_dict, tmp_path):
    log = []
    node, root = _node(tiny_config_dict, tmp_path, log)
    round1, stamp1 = _two_rounds(node)
    assert round1 == 1
    first = node.handle(LocalTrain(2, 3)).values["loss/local"]  # the node goes on into round 2 ...
    second = node.handle(LocalTrain(2, 3)).values["loss/local"]  # ... and trains more: it is ahead
    assert second != first
    assert read_stamp(root / "current")["clean"] is False
    # The server restarts from its round-1 checkpoint (resume): the node must start round 2 again
    # from its round-1 state, not from the model it kept in memory.
    node.handle(Restore(1, expect=stamp1))
    assert any("reloaded from its round 1 snapshot" in m and "in round 2" in m for m in log), log
    again = node.handle(LocalTrain(2, 3)).values["loss/local"]
    assert again == first
    # A fresh process (nothing in memory) gives the same.
    fresh, _ = _node(tiny_config_dict, tmp_path)
    fresh.handle(Restore(1, expect=stamp1))
    assert fresh.handle(LocalTrain(2, 3)).values["loss/local"] == first


def test_a_node_behind_the_checkpoint_or_from_another_attempt_is_refused(tiny_config_dict, tmp_path):
    node, root = _node(tiny_config_dict, tmp_path)
    _, stamp1 = _two_rounds(node)
    before = sorted(p.name for p in (root / "checkpoints").iterdir())
    current = (root / "current" / "model" / "model.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match=r"checkpoint is round 2, but this node has no snapshot of round 2 "
                                              r"\(it has rounds \[0, 1\]; its current state is at round 1\), so it is behind it"):
        node.handle(Restore(2))
    with pytest.raises(CheckpointError, match=r"its snapshot of round 1 is not the one the server's checkpoint recorded"):
        node.handle(Restore(1, expect="f" * 32))
    # Refused: nothing was changed.
    assert sorted(p.name for p in (root / "checkpoints").iterdir()) == before
    assert (root / "current" / "model" / "model.safetensors").read_bytes() == current
    node.handle(Restore(1, expect=stamp1))  # the recorded one is accepted


def test_a_node_that_went_on_past_its_kept_snapshots_is_refused(tiny_config_dict, tmp_path):
    node, root = _node(tiny_config_dict, tmp_path)
    _two_rounds(node)
    node.handle(LocalTrain(2, 2))
    node.handle(Evaluate(2))  # keeps rounds 1 and 2; round 0 is gone
    with pytest.raises(CheckpointError, match=r"no snapshot of round 0 \(it has rounds \[1, 2\].*ahead of it: it keeps only "
                                              r"the last two rounds"):
        node.handle(Restore(0))
