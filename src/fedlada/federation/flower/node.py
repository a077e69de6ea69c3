"""What a SuperNode does with one message: (re)build its client from its state, handle, save.

The state directory is the source of truth: after every message the node saves its client's model
and plug-in state (filters, work pending between two messages) there, so a ClientApp process that
dies, or one started afresh for every message (Flower's default), loses nothing:

    <state-dir>/<run>/<client-k>/current/          model/ + state/ (as `Client.save` writes them) + stamp.json
    <state-dir>/<run>/<client-k>/checkpoints/round-N/   after each finished round (last two kept)

A process that lives for many messages (fedlada's ClientApp worker, `flower/worker.py`) keeps the
`Node` and its loaded client in memory, to skip rebuilding the data and reloading the model; it
reuses them only while `current/stamp.json` holds the stamp it wrote itself. Anything else that
changed the directory (a `Restore`, another process, a restart) changes the stamp, and the client
is loaded from disk again. A stamp names the saved content: a snapshot copied back unchanged keeps
it, and `stamp.json` also says which round that content belongs to (`round`, and `clean`: false
once a message of the next round changed it).

A round ends with `Evaluate(N)` (the runner evaluates, then checkpoints), so the node snapshots its
state right after answering it: one message fewer per client and round, which matters when every
message starts a process. On resume the server sends `Restore(N)` for its own last checkpoint; the
previous snapshot is kept as well, in case the server stopped before writing its round-N checkpoint.
The server's checkpoint records the stamp of each node's snapshot, and `Restore` checks it: a node
ahead of the checkpoint (it went on into the next round) or behind it is reloaded from the
checkpointed round's snapshot; a node that does not hold that very snapshot (pruned, lost, or
written by another attempt at the round) is refused with one line, never mixed in.

`<run>` is the name of the server's run directory, so two runs never share a state and a resumed
run finds its own. `<client-k>/run.json` holds a fingerprint of the config (all but `runtime` and `rounds`),
written at round 0: a state directory left by another run under the same name is refused with one
clear error instead of being mixed in (sent back as a `NodeError` reply, so that the server can print
it as that one line). The client's data is rebuilt from the config
(deterministic); only this node's partition is used. Nothing here imports Flower.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from fedlada import errors
from fedlada.config import RunConfig
from fedlada.data import build_federation_data
from fedlada.errors import CheckpointError, FedladaError
from fedlada.federation.messages import Evaluate, Message, Prepare
from fedlada.federation.participants import Client, torch_device
from fedlada.progress import UI

CURRENT = "current"
CHECKPOINTS = "checkpoints"
STAMP = "stamp.json"


def read_stamp(path: Path) -> dict:
    """`path/stamp.json` ({} when missing or unreadable: state written before stamps, or damaged)."""
    try:
        return json.loads((path / STAMP).read_text())
    except (OSError, ValueError):
        return {}


def _describe(stamp: dict) -> str:
    if "round" not in stamp:
        return "of an unknown round"
    return f"at round {stamp['round']}" if stamp.get("clean") else f"in round {stamp['round'] + 1} (after round {stamp['round']})"


# Control messages: the server asks a node who it is, or to restore its client from a snapshot.
# They are part of running the federation, not of the method, and are not counted as traffic.
@dataclass
class Hello(Message):
    pass


@dataclass
class NodeInfo(Message):
    partition_id: int
    num_partitions: int
    name: str


@dataclass
class Restore(Message):
    """Put the client back to its snapshot of `round`; with `snapshot` >= 0, also save that as round
    `snapshot`'s (a client that failed in round `snapshot` and missed its end-of-round snapshot)."""

    round: int
    snapshot: int = -1
    expect: str = ""  # the stamp the server's checkpoint recorded for that snapshot ("": do not check)


@dataclass
class Done(Message):
    pass


@dataclass
class NodeError(Message):
    """The reply of a node whose handling stopped on a `FedladaError` (its inputs or files, not a crash):
    sent as a reply, not as a Flower error, so that the server gets the error's class and its one line
    whatever Flower makes of an exception (a traceback under simulation, `<class ...>:<...>` deployed)."""

    kind: str
    message: str

    def error(self) -> FedladaError:
        """The error as the node raised it (its class, when fedlada.errors has it)."""
        cls = getattr(errors, self.kind, None)
        return (cls if isinstance(cls, type) and issubclass(cls, FedladaError) else FedladaError)(self.message)


CONTROL_MESSAGES = (Hello, NodeInfo, Restore, Done, NodeError)  # registered by the apps (`register_protocol`)


_SPLITS: dict[tuple, object] = {}  # the last data split built in this process, by its data config


def run_tag(out: str) -> str:
    """The per-run folder name on a node: the server's run directory name, made path-safe."""
    return re.sub(r"[^A-Za-z0-9_.+=-]", "_", Path(out).name) or "run"


@dataclass
class NodeSettings:
    """A node's own settings, from its node config (Flower) with defaults from the run."""

    partition_id: int
    num_partitions: int
    state_dir: Path
    cache_dir: Path | None = None
    data_path: str | None = None


def _replace_dir(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f"{dst.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


class Node:
    """One SuperNode's client: for one message, or kept for many by a long-lived ClientApp process."""

    def __init__(self, cfg: RunConfig, settings: NodeSettings, ui: UI | None = None):
        if settings.num_partitions != len(cfg.clients):
            raise ValueError(
                f"node config num-partitions={settings.num_partitions}, but the config has {len(cfg.clients)} clients"
            )
        if not 0 <= settings.partition_id < len(cfg.clients):
            raise ValueError(f"node config partition-id={settings.partition_id} is outside 0..{len(cfg.clients) - 1}")
        self.cfg, self.settings, self.ui = cfg, settings, ui or UI()
        self.name = f"client-{settings.partition_id}"
        self.root = Path(settings.state_dir) / self.name
        self._mine = None
        self._live: Client | None = None  # the client as this process last saved it, and its stamp
        self._live_stamp: str | None = None
        self.snapshot: tuple[int, str] | None = None  # (round, stamp) of a snapshot the last message wrote
        self.reloads = 0  # how often the client was loaded from disk (a kept one is not)

    def _data(self):
        """This node's ClientData and the global test set (rebuilt from the config: deterministic)."""
        if self._mine is None:
            cfg = self.cfg
            if self.settings.data_path:
                cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"path": self.settings.data_path})})
            key = (cfg.data.model_dump_json(), len(cfg.clients), cfg.seed)
            if key not in _SPLITS:  # one process serving many virtual nodes (simulation) splits once
                _SPLITS.clear()
                _SPLITS[key] = build_federation_data(cfg.data, len(cfg.clients), cfg.seed)
            data = _SPLITS[key]
            self._mine = (cfg, data.clients[self.settings.partition_id], data.global_test)
        return self._mine

    def auditor(self):
        """The privacy audit of this node's replies, over its own private sets only."""
        from fedlada.federation.audit import Auditor

        if getattr(self, "_auditor", None) is None:  # built once per Node (its automaton takes a while)
            _, own_data, _ = self._data()
            self._auditor = Auditor.from_client_data({self.name: own_data})
        return self._auditor

    def fingerprint(self) -> str:
        from fedlada.federation.participants import fingerprint

        # not `rounds`: it only bounds the loop, and a resumed run may be extended (fedlada.methods.results_difference)
        return fingerprint(self.cfg.model_dump(mode="json", by_alias=True, exclude={"runtime", "rounds"}))

    def _check_run(self) -> None:
        marker = self.root / "run.json"
        if marker.exists():
            saved = json.loads(marker.read_text()).get("fingerprint")
            if saved != self.fingerprint():
                raise CheckpointError(
                    f"{self.root} holds the state of another run (config fingerprint {saved}, this run "
                    f"{self.fingerprint()}); remove it, or give this run its own --out or state-dir"
                )

    def _client(self) -> Client:
        from fedlada.config import default_cache_dir

        cfg, own_data, global_test = self._data()
        if cfg.runtime.threads:
            torch.set_num_threads(cfg.runtime.threads)
        cache = Path(self.settings.cache_dir) if self.settings.cache_dir else default_cache_dir(cfg)
        return Client(self.settings.partition_id, cfg, own_data.train, own_data.test, global_test, own_data.heldout,
                      device=torch_device(cfg.runtime.device), cache_dir=cache, ui=self.ui)

    def handle(self, msg: Message) -> Message:
        current = self.root / CURRENT
        self.snapshot = None
        if isinstance(msg, Hello):
            return NodeInfo(self.settings.partition_id, self.settings.num_partitions, self.name)
        if not isinstance(msg, Prepare):
            self._check_run()
        if isinstance(msg, Restore):
            self._restore(msg)
            return Done()
        if isinstance(msg, Prepare):  # a new run: forget any state left from an earlier one
            client = self._client()
            self._live = None
            shutil.rmtree(self.root, ignore_errors=True)
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / "run.json").write_text(json.dumps({"fingerprint": self.fingerprint()}) + "\n")
            base = {"round": -1, "clean": True}
        else:
            client, base = self._loaded(current)
        self._live = None  # until what it holds is on disk again
        reply = client.handle(msg)
        if isinstance(msg, Evaluate):  # evaluation changes nothing; it ends the round: snapshot
            self._live, self._live_stamp = client, base["stamp"]
            self._snapshot(msg.round)
        elif client.lm is not None:
            tmp = self.root / f"{CURRENT}.tmp{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            client.save(tmp)
            stamp = uuid.uuid4().hex
            (tmp / STAMP).write_text(json.dumps({"stamp": stamp, "round": max(base["round"], 0),
                                                 "clean": isinstance(msg, Prepare)}) + "\n")
            shutil.rmtree(current, ignore_errors=True)
            tmp.rename(current)
            self._live, self._live_stamp = client, stamp
        return reply

    def _loaded(self, current: Path) -> tuple[Client, dict]:
        """The client holding `current/`'s state: the one kept in memory if `current/` is still what it
        saved (same stamp), else rebuilt and loaded from disk; and `current/`'s stamp."""
        if not (current / "model").exists():
            raise RuntimeError(f"{self.name}: no state in {current}; was round 0 (Prepare) run on this node?")
        stamp = read_stamp(current)
        if "stamp" not in stamp:  # state from before stamps: give it one, so that it can be kept from now on
            stamp = {"stamp": uuid.uuid4().hex, "round": 0, "clean": False}
            (current / STAMP).write_text(json.dumps(stamp) + "\n")
        if self._live is not None and stamp["stamp"] == self._live_stamp:
            return self._live, stamp
        client = self._client()
        client.load(current)
        self.reloads += 1
        return client, stamp

    def _restore(self, msg: Restore) -> None:
        """Back to the snapshot of round `msg.round` (resume, or a client that failed mid-round)."""
        snaps = self.root / CHECKPOINTS
        saved = snaps / f"round-{msg.round}"
        have = sorted(int(p.name.split("-", 1)[1]) for p in snaps.glob("round-*") if p.name.split("-", 1)[1].isdigit())
        now = read_stamp(self.root / CURRENT)
        if not (saved / "model").exists():
            where = ("ahead of it: it keeps only the last two rounds" if have and min(have) > msg.round else
                     "behind it" if not have or max(have) < msg.round else "missing that round")
            raise CheckpointError(
                f"{self.root}: the server's checkpoint is round {msg.round}, but this node has no snapshot of round "
                f"{msg.round} (it has rounds {have or 'none'}; its current state is {_describe(now)}), so it is {where}; "
                "its state cannot be put back to the checkpoint: remove it and start the run afresh (no --resume)"
            )
        found = read_stamp(saved).get("stamp", "")
        if msg.expect and found != msg.expect:
            raise CheckpointError(
                f"{self.root}: its snapshot of round {msg.round} is not the one the server's checkpoint recorded "
                f"(stamp {found or 'none'}, checkpoint {msg.expect}): node and server state come from different "
                "attempts at that round; remove it and start the run afresh (no --resume)"
            )
        if now.get("stamp") != found:
            self.ui.log(f"{self.name}: state {_describe(now)}, the checkpoint is round {msg.round}: reloaded from its "
                        f"round {msg.round} snapshot")
        _replace_dir(saved, self.root / CURRENT)
        if msg.snapshot >= 0:
            self._snapshot(msg.snapshot)

    def _snapshot(self, round_: int) -> None:
        current = self.root / CURRENT
        stamp = read_stamp(current)
        stamp.update(round=round_, clean=True)  # the same content, now this round's end
        stamp.setdefault("stamp", uuid.uuid4().hex)
        (current / STAMP).write_text(json.dumps(stamp) + "\n")
        _replace_dir(current, self.root / CHECKPOINTS / f"round-{round_}")
        self.snapshot = (round_, stamp["stamp"])
        for old in (self.root / CHECKPOINTS).glob("round-*"):
            n = old.name.split("-", 1)[1]
            if n.isdigit() and int(n) < round_ - 1:
                shutil.rmtree(old)
