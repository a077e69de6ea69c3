"""What a SuperNode does with one message: rebuild its client, load its state, handle, save.

A deployed SuperNode starts a fresh ClientApp process for every message, so nothing may live in
memory between two messages. Each node keeps its client's model and plug-in state (filters, work
pending between two messages) in a state directory:

    <state-dir>/<run>/<client-k>/current/          model/ + state/ (as `Client.save` writes them)
    <state-dir>/<run>/<client-k>/checkpoints/round-N/   after each finished round (last two kept)

A round ends with `Evaluate(N)` (the runner evaluates, then checkpoints), so the node snapshots its
state right after answering it: one message fewer per client and round, which matters when every
message starts a process. On resume the server sends `Restore(N)` for its own last checkpoint; the
previous snapshot is kept as well, in case the server stopped before writing its round-N checkpoint.

`<run>` is the name of the server's run directory, so two runs never share a state and a resumed
run finds its own. `<client-k>/run.json` holds a fingerprint of the config (all but `runtime`),
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
from dataclasses import dataclass
from pathlib import Path

import torch

from fedlada import errors
from fedlada.config import RunConfig
from fedlada.data import build_federation_data
from fedlada.errors import CheckpointError, FedladaError
from fedlada.federation.messages import Evaluate, Message, Prepare, register
from fedlada.federation.participants import Client, torch_device
from fedlada.progress import UI

CURRENT = "current"
CHECKPOINTS = "checkpoints"


# Control messages: the server asks a node who it is, or to restore its client from a snapshot.
# They are part of running the federation, not of the method, and are not counted as traffic.
@register
@dataclass
class Hello(Message):
    pass


@register
@dataclass
class NodeInfo(Message):
    partition_id: int
    num_partitions: int
    name: str


@register
@dataclass
class Restore(Message):
    """Put the client back to its snapshot of `round`; with `snapshot` >= 0, also save that as round
    `snapshot`'s (a client that failed in round `snapshot` and missed its end-of-round snapshot)."""

    round: int
    snapshot: int = -1


@register
@dataclass
class Done(Message):
    pass


@register
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
    """One SuperNode's client, alive for one message."""

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

    def _data(self):
        """This node's ClientData and the global test set (rebuilt from the config: deterministic)."""
        if self._mine is None:
            cfg = self.cfg
            if self.settings.data_path:
                cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"path": self.settings.data_path})})
            data = build_federation_data(cfg.data, len(cfg.clients), cfg.seed)
            self._mine = (cfg, data.clients[self.settings.partition_id], data.global_test)
        return self._mine

    def auditor(self):
        """The privacy audit of this node's replies, over its own private sets only."""
        from fedlada.federation.audit import Auditor

        _, mine, _ = self._data()
        return Auditor.from_client_data({self.name: mine})

    def fingerprint(self) -> str:
        from fedlada.federation.participants import fingerprint

        return fingerprint(self.cfg.model_dump(mode="json", by_alias=True, exclude={"runtime"}))

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
        from fedlada.federation.runner import default_cache_dir

        cfg, mine, global_test = self._data()
        if cfg.runtime.threads:
            torch.set_num_threads(cfg.runtime.threads)
        cache = Path(self.settings.cache_dir) if self.settings.cache_dir else default_cache_dir(cfg)
        return Client(self.settings.partition_id, cfg, mine.train, mine.test, global_test, mine.heldout,
                      device=torch_device(cfg.runtime.device), cache_dir=cache, ui=self.ui)

    def handle(self, msg: Message) -> Message:
        current = self.root / CURRENT
        if isinstance(msg, Hello):
            return NodeInfo(self.settings.partition_id, self.settings.num_partitions, self.name)
        if not isinstance(msg, Prepare):
            self._check_run()
        if isinstance(msg, Restore):
            saved = self.root / CHECKPOINTS / f"round-{msg.round}"
            if not (saved / "model").exists():
                raise FileNotFoundError(f"{self.name}: no checkpoint of round {msg.round} in {saved}")
            _replace_dir(saved, current)
            if msg.snapshot >= 0:
                self._snapshot(msg.snapshot)
            return Done()
        client = self._client()
        if isinstance(msg, Prepare):  # a new run: forget any state left from an earlier one
            shutil.rmtree(self.root, ignore_errors=True)
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / "run.json").write_text(json.dumps({"fingerprint": self.fingerprint()}) + "\n")
        elif (current / "model").exists():
            client.load(current)
        else:
            raise RuntimeError(f"{self.name}: no state in {current}; was round 0 (Prepare) run on this node?")
        reply = client.handle(msg)
        if isinstance(msg, Evaluate):  # evaluation changes nothing; it ends the round: snapshot
            self._snapshot(msg.round)
        elif client.lm is not None:
            tmp = self.root / f"{CURRENT}.tmp{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            client.save(tmp)
            shutil.rmtree(current, ignore_errors=True)
            tmp.rename(current)
        return reply

    def _snapshot(self, round_: int) -> None:
        _replace_dir(self.root / CURRENT, self.root / CHECKPOINTS / f"round-{round_}")
        for old in (self.root / CHECKPOINTS).glob("round-*"):
            n = old.name.split("-", 1)[1]
            if n.isdigit() and int(n) < round_ - 1:
                shutil.rmtree(old)
