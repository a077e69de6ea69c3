"""The Flower `ServerApp` and `ClientApp`: the in-process round loop, with Flower as the channel.

The ServerApp runs the same `Runner` as `fedlada run`, holding the server and the host; the only
difference is its channel, whose `call(i, msg)` sends the project message to the SuperNode holding
partition i and waits for the reply. Bytes are counted as in-process: the size of `encode(msg)`.
The ClientApp decodes the message and hands it to `node.Node`, which keeps its client's state in the
node's state directory, so it works whether a ClientApp process lives for one message (Flower's
default) or many (`flower/worker.py`, which keeps the `Node` and its loaded model between messages).
Each reply carries, next to the project message, the stamp of the snapshot the node wrote (record
`fedlada.node`); the server's checkpoint records them, and a resume checks them (node.py).

Run config keys (defaults in the app's pyproject.toml; `fedlada flower ...` sets them):
`config` (path or packaged name), `set` (overrides, `;`-separated), `config-yaml` (a full config;
wins over the two), `out` (the server's run directory), `resume`, `state-dir` (client state root
when a node config gives none), `node-wait` (seconds to wait for all SuperNodes).
Node config keys: `partition-id`, `num-partitions` (required), `state-dir`, `cache-dir`, `data-path`.
"""

from __future__ import annotations

import fcntl
import json
import re
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import yaml
from flwr.app import ConfigRecord, Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedlada.config import RunConfig, config_from_dict, load_config
from fedlada.errors import FedladaError, PrivacyViolation
from fedlada.federation.channel import Channel, ClientError, one_line
from fedlada.federation.flower.node import CONTROL_MESSAGES, Hello, Node, NodeError, NodeSettings, Restore, run_tag
from fedlada.federation.flower.records import from_record, to_record
from fedlada.federation.messages import Message as ProjectMessage
from fedlada.federation.messages import encode
from fedlada.methods import register_protocol
from fedlada.progress import UI

MESSAGE_TYPE = "query.fedlada"
STATUS = "flower-status.json"
NODE_RECORD = "fedlada.node"  # ConfigRecord in a reply: the snapshot the node wrote (round, stamp)


class LogUI(UI):
    """Plain log lines (Flower collects the apps' output, and `fedlada flower local` echoes the
    ServerApp's); no progress bars: a task logs one line when it is done."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix

    def log(self, message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {self.prefix}{message}", file=sys.stderr, flush=True)

    @contextmanager
    def task(self, description: str, total: int):
        start = time.monotonic()
        yield lambda n=1: None
        self.log(f"{description}: done in {time.monotonic() - start:.1f} s")


def config_from_run(run_config) -> RunConfig:
    text = str(run_config.get("config-yaml", "") or "")
    if text.strip():
        return config_from_dict(yaml.safe_load(text))
    overrides = [s.strip() for s in re.split(r"[;\n]", str(run_config.get("set", "") or "")) if s.strip()]
    return load_config(str(run_config.get("config", "") or "") or None, overrides)


def out_dir(run_config, cfg: RunConfig) -> Path:
    out = str(run_config.get("out", "") or "")
    return Path(out) if out else Path("runs") / f"{cfg.name}-{cfg.method}-seed{cfg.seed}"


# ------------------------------------------------------------------------------------ server side
class RemoteClient:
    """What the server side knows of a client living on a SuperNode: its name."""

    role = "client"

    def __init__(self, name: str):
        self.name = name


class FlowerChannel(Channel):
    """`Channel` whose clients live on SuperNodes; one Flower message per project message."""

    def __init__(self, grid: Grid, node_ids: list[int], names: list[str], poll_max: float = 0.5,
                 timeout: float | None = None, ui: UI | None = None):
        super().__init__([RemoteClient(n) for n in names])
        self.grid, self.node_ids, self.poll_max, self.timeout = grid, node_ids, poll_max, timeout
        self.ui = ui or UI()
        # Per client, round -> stamp of the node's snapshot of that round (from its replies or a checkpoint).
        self.snapshots: list[dict[int, str]] = [{} for _ in names]

    @classmethod
    def connect(cls, grid: Grid, num_clients: int, wait: float, ui: UI) -> FlowerChannel:
        """Wait for the SuperNodes, ask each for its partition and map partition i -> node."""
        deadline = time.monotonic() + wait
        while len(ids := list(grid.get_node_ids())) < num_clients:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(ids)} of {num_clients} SuperNodes connected after {wait:.0f} s")
            time.sleep(0.5)
        probe = cls(grid, ids, [f"node-{i}" for i in ids])
        by_partition: dict[int, int] = {}
        for j, info in probe.exchange_all({j: Hello() for j in range(len(ids))}).items():  # all asked at once
            node_id = ids[j]
            if isinstance(info, ClientError):
                raise info
            if info.num_partitions != num_clients:
                raise ValueError(f"node {node_id}: num-partitions={info.num_partitions}, the config has {num_clients} clients")
            if info.partition_id in by_partition:
                raise ValueError(f"nodes {by_partition[info.partition_id]} and {node_id} both hold partition {info.partition_id}")
            by_partition[info.partition_id] = node_id
        missing = sorted(set(range(num_clients)) - set(by_partition))
        if missing:
            raise ValueError(f"no SuperNode holds partition(s) {missing}")
        ui.log("SuperNodes: " + ", ".join(f"client-{i} on node {by_partition[i]}" for i in range(num_clients)))
        return cls(grid, [by_partition[i] for i in range(num_clients)], [f"client-{i}" for i in range(num_clients)], ui=ui)

    def exchange(self, index: int, request: ProjectMessage) -> ProjectMessage:
        """Send one message to client `index` and wait for its reply (not counted as traffic).

        ClientError when the node reports an error or (with `timeout`) no reply comes in time."""
        reply = self.exchange_all({index: request})[index]
        if isinstance(reply, ClientError):
            raise reply
        return reply

    def exchange_all(self, requests: dict[int, ProjectMessage]) -> dict[int, ProjectMessage | ClientError]:
        """Send every request, then wait for all the replies (not counted as traffic): the nodes work at
        the same time, and each node's wait for its next message (a SuperNode polls every 3 s when idle)
        overlaps the others' instead of adding up. Per client its reply, or a ClientError when its node
        reports an error or (with `timeout`) no reply comes in time."""
        start = time.monotonic()
        msgs = [Message(content=to_record(request), dst_node_id=self.node_ids[i], message_type=MESSAGE_TYPE)
                for i, request in requests.items()]
        results: dict[int, ProjectMessage | ClientError] = {}
        waiting = {}  # message id -> client index
        for message_id, index in zip(self.grid.push_messages(msgs), requests):  # in order; None: not pushed
            if message_id is None:
                results[index] = ClientError(self.clients[index].name, type(requests[index]).__name__,
                                             "the SuperLink did not take the message")
            else:
                waiting[message_id] = index
        deadline = None if self.timeout is None else start + self.timeout
        pause = 0.01
        while waiting:
            replies = list(self.grid.pull_messages(set(waiting)))
            for reply in replies:
                index = waiting.pop(reply.metadata.reply_to_message_id)
                results[index] = self._reply(index, requests[index], reply, start)
            if replies:
                pause = 0.01
                continue
            if deadline is not None and time.monotonic() > deadline:
                for index in waiting.values():
                    results[index] = ClientError(self.clients[index].name, type(requests[index]).__name__,
                                                 f"no reply from node {self.node_ids[index]} within "
                                                 f"runtime.client_timeout={self.timeout:g} s")
                break
            time.sleep(pause)
            pause = min(pause * 1.5, self.poll_max)
        return {i: results[i] for i in requests}

    def _reply(self, index: int, request: ProjectMessage, reply: Message, start: float) -> ProjectMessage | ClientError:
        """A node's reply as the project message it carries, or the ClientError it stands for."""
        name, kind, node = self.clients[index].name, type(request).__name__, self.node_ids[index]
        if reply.has_error():
            reason = str(reply.error.reason).strip().splitlines()
            return ClientError(name, kind, f"node {node}: {reason[-1] if reason else 'error'}")
        content = from_record(reply.content)
        if isinstance(content, NodeError):
            err = content.error()
            failure = ClientError(name, kind, f"node {node}: {one_line(err)}")
            failure.__cause__ = err  # a FedladaError on the node is the inputs' fault: the run stops on it
            return failure
        if NODE_RECORD in reply.content:
            meta = reply.content[NODE_RECORD]
            if int(meta["snapshot"]) >= 0:
                self.snapshots[index][int(meta["snapshot"])] = str(meta["stamp"])
        if not isinstance(request, Hello):  # progress on the server's screen: a round is many such steps
            self.ui.log(f"{name}: {kind} answered in {time.monotonic() - start:.1f} s")
        return content

    def call_all(self, requests: dict[int, ProjectMessage]) -> dict[int, ProjectMessage | ClientError]:
        for index, request in requests.items():  # every request audited and counted before any leaves
            self._outgoing(index, request)
        results = self.exchange_all(requests)
        for index, reply in results.items():
            if not isinstance(reply, ClientError):
                self._count(self.clients[index].name, self.server_name, self._incoming(index, reply))
        return results

    def _send(self, index: int, request: ProjectMessage, data: bytes) -> tuple[ProjectMessage, int]:
        reply = self.exchange(index, request)
        return reply, self._incoming(index, reply)

    def _incoming(self, index: int, reply: ProjectMessage) -> int:
        """Audit a reply (the node checked it before sending too); the size of its encoding."""
        encoded = encode(reply)
        name = self.clients[index].name
        self.audit(encoded, name, self.server_name, owner=name)
        return len(encoded)

    def restore_client(self, index: int, path: Path, round_: int) -> None:
        # Back to the node's own round snapshot, and saved as this round's too (the runner checkpoints
        # next, and a resume restores every node to the checkpointed round).
        try:
            self.exchange(index, Restore(round_, snapshot=round_ + 1, expect=self.snapshots[index].get(round_, "")))
        except ClientError as err:  # still unreachable: it restores when it is next asked to (resume)
            self.ui.log(f"could not put {err.client} back to round {round_}: {err.reason} (the checkpoint records it "
                        f"at round {round_}: a resume puts it back)")

    def save_clients(self, path: Path, round_: int) -> None:
        # Each node snapshotted its client when it answered Evaluate(round_), the round's last message
        # (or, failed in the round, when it was put back). The stamps let a resume check that a node
        # still holds that very state. A client whose put-back did not reach it is recorded at the last
        # round it has a snapshot of: a resume puts it back from there.
        where = {}
        for i, c in enumerate(self.clients):
            known = [r for r in self.snapshots[i] if r <= round_]
            if known:
                r = round_ if round_ in self.snapshots[i] else max(known)
                where[c.name] = {"round": r, "stamp": self.snapshots[i][r]}
        (path / "clients.json").write_text(json.dumps(
            {"round": round_, "clients": [c.name for c in self.clients], "where": "each SuperNode's state-dir",
             "snapshots": where}) + "\n")

    def load_clients(self, path: Path, round_: int) -> None:
        try:
            saved = json.loads((path / "clients.json").read_text()).get("snapshots", {})
        except (OSError, ValueError, TypeError):  # a checkpoint from before stamps: restore unchecked
            saved = {}
        for i, c in enumerate(self.clients):
            snap = saved.get(c.name, {"round": round_, "stamp": ""})
            src, stamp = int(snap["round"]), str(snap["stamp"])
            try:
                self.exchange(i, Restore(src, snapshot=round_ if src != round_ else -1, expect=stamp))
            except ClientError as err:
                if isinstance(err.__cause__, FedladaError):  # e.g. the node holds another run's state
                    raise err.__cause__ from None
                raise
            if stamp:
                self.snapshots[i][src] = self.snapshots[i][round_] = stamp


server_app = ServerApp()


@server_app.main()
def server_main(grid: Grid, context: Context) -> None:
    from fedlada.report import write_report
    from fedlada.runner import Runner

    rc = context.run_config
    cfg = config_from_run(rc)
    register_protocol(cfg.method, *CONTROL_MESSAGES)
    out = out_dir(rc, cfg).resolve()
    out.mkdir(parents=True, exist_ok=True)
    status = out / STATUS
    status.write_text(json.dumps({"status": "running"}) + "\n")
    ui = LogUI()
    ui.log(f"run {out}: method={cfg.method} seed={cfg.seed} rounds={cfg.rounds} clients={len(cfg.clients)}")
    try:
        channel = FlowerChannel.connect(grid, len(cfg.clients), float(rc.get("node-wait", 300)), ui)
        channel.timeout = cfg.runtime.client_timeout

        def on_round(t, rows):
            ui.log(f"round {t}: " + ", ".join(f"{r['participant']} {r['split'].split('_')[0]} {100 * r['accuracy']:.1f}" for r in rows))

        Runner(cfg, out, ui, channel=channel).run(resume=bool(rc.get("resume", False)), on_round=on_round)
        write_report(out)
        status.write_text(json.dumps({"status": "finished"}) + "\n")
    except FedladaError as err:  # the inputs or files: `fedlada flower` prints it as one line
        status.write_text(json.dumps({"status": "failed", "error": str(err), "one_line": True,
                                      "traceback": traceback.format_exc()}) + "\n")
        raise
    except BaseException as err:
        status.write_text(json.dumps({"status": "failed", "error": f"{type(err).__name__}: {err}",
                                      "traceback": traceback.format_exc()}) + "\n")
        raise


# ------------------------------------------------------------------------------------ client side
client_app = ClientApp()
_NODES: dict[tuple, Node] = {}  # the Node of this process's last message (its loaded client with it)


def _node(run_config, node_config) -> Node:
    """This message's Node: the one of the previous message when run and node are the same, so that a
    long-lived ClientApp process keeps its client loaded; otherwise a new one (only one is kept, so a
    process serving several virtual nodes in turn, as under simulation, holds one model at a time)."""
    key = (tuple(sorted((k, str(v)) for k, v in run_config.items())), tuple(sorted((k, str(v)) for k, v in node_config.items())))
    node = _NODES.get(key)
    if node is None:
        cfg = config_from_run(run_config)
        settings = node_settings(run_config, node_config, cfg)
        node = Node(cfg, settings, LogUI(f"client-{settings.partition_id}: "))
        _NODES.clear()
        _NODES[key] = node
    return node


def node_settings(run_config, node_config, cfg: RunConfig) -> NodeSettings:
    for key in ("partition-id", "num-partitions"):
        if key not in node_config:
            raise KeyError(f"node config needs {key} (flower-supernode --node-config 'partition-id=0 num-partitions=3')")
    base = node_config.get("state-dir") or run_config.get("state-dir") or Path(tempfile.gettempdir()) / "fedlada-flower"
    return NodeSettings(
        partition_id=int(node_config["partition-id"]), num_partitions=int(node_config["num-partitions"]),
        state_dir=Path(str(base)).expanduser() / run_tag(str(out_dir(run_config, cfg))),
        cache_dir=Path(str(node_config["cache-dir"])).expanduser() if node_config.get("cache-dir") else None,
        data_path=str(node_config["data-path"]) if node_config.get("data-path") else None,
    )


@contextmanager
def one_node_at_a_time(node_config):
    """With a `compute-lock` file in the node config (`flower local`: every SuperNode on this machine),
    the nodes take turns. The clients of a step get their messages at once, so their round trips
    overlap, but they compute one after another: torch models sharing a few cores run far slower
    together than in turn (three clients on two cores: a round 5x slower). Elsewhere each node has its
    own machine and no lock."""
    path = node_config.get("compute-lock")
    if not path:
        yield
        return
    Path(str(path)).parent.mkdir(parents=True, exist_ok=True)
    with open(str(path), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


@client_app.query("fedlada")
def client_main(message: Message, context: Context) -> Message:
    with one_node_at_a_time(context.node_config):
        return _answer(message, context)


def _answer(message: Message, context: Context) -> Message:
    node = _node(context.run_config, context.node_config)
    register_protocol(node.cfg.method, *CONTROL_MESSAGES)
    ui = node.ui
    try:
        reply = node.handle(from_record(message.content))
        if node.cfg.runtime.audit:  # on the node, with its own private data, before the reply leaves it
            node.auditor().check(encode(reply), node.name, "server")
    except PrivacyViolation as err:  # the server is not told which private sample: only the node's log says
        ui.log(str(err))
        reply = NodeError("PrivacyViolation", f"privacy audit on the node: the reply of {node.name} holds its "
                                              "private text; nothing was sent (the node's log names the field and sample)")
    except FedladaError as err:
        reply = NodeError(type(err).__name__, str(err))
    content = to_record(reply)
    round_, stamp = node.snapshot or (-1, "")
    content[NODE_RECORD] = ConfigRecord({"snapshot": round_, "stamp": stamp})
    return Message(content, reply_to=message)
