"""The in-process runner: every participant in one process, rounds as in DESIGN section 3.

Round 0 is the state after each model's own preparation and before any exchange. After every
round the runner writes metrics and a checkpoint (weights as safetensors, the rest as JSON), so
`resume` continues from the last finished round and ends with the same numbers as an
uninterrupted run (every random choice is seeded from config seed, round and participant).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from fedlada.config import RunConfig, dump_config
from fedlada.data import build_federation_data
from fedlada.federation.channel import Channel
from fedlada.federation.messages import Evaluate, Prepare, Report
from fedlada.federation.participants import Client, Server, torch_device
from fedlada.hosts import HOSTS, RoundContext
from fedlada.progress import UI

hf_logging.disable_progress_bar()  # per-save "Writing model shards" bars would drown our progress

METRICS = "metrics.jsonl"
SELECTIONS = "selections.jsonl"
SPLITS = ("local_test", "global_test")
CHECKPOINTS = "checkpoints"


def default_cache_dir(cfg: RunConfig) -> Path:
    if cfg.runtime.cache_dir:
        return Path(cfg.runtime.cache_dir).expanduser()
    return Path(os.environ.get("FEDLADA_CACHE", Path.home() / ".cache" / "fedlada"))


def metric_rows(round_: int, participant: str, role: str, values: dict[str, float], sent: int, received: int) -> list[dict]:
    """One row per evaluated split, each carrying the participant's losses, seconds and bytes of the round."""
    splits = sorted({k.split("/", 1)[0] for k in values if k.endswith("/accuracy")}, key=SPLITS.index)
    extra = {k: v for k, v in values.items() if k.split("/", 1)[0] not in splits}
    return [
        {
            "round": round_, "participant": participant, "role": role, "split": split,
            "accuracy": values[f"{split}/accuracy"], "n": int(values[f"{split}/n"]),
            "bytes_sent": sent, "bytes_received": received, **extra,
        }
        for split in splits
    ]


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def _append_jsonl(path: Path, rows: list[dict]) -> None:
    if rows:
        with open(path, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


class Runner:
    """The round loop on the server side.

    Without `channel`, every client lives in this process behind the in-process `Channel`. With one
    (the Flower channel), the clients live elsewhere: the runner holds the server and the host only,
    and `channel.clients` are the clients' names.
    """

    def __init__(self, cfg: RunConfig, out_dir: Path, ui: UI | None = None, channel: Channel | None = None):
        self.cfg, self.out, self.ui = cfg, Path(out_dir), ui or UI()
        if cfg.runtime.threads:
            torch.set_num_threads(cfg.runtime.threads)
        device = torch_device(cfg.runtime.device)
        cache = default_cache_dir(cfg)
        data = build_federation_data(cfg.data, len(cfg.clients), cfg.seed)
        kw = dict(device=device, cache_dir=cache, ui=self.ui)
        self.server = Server(cfg, data.server_corpus, data.public, data.global_test, **kw)
        if channel is None:
            self.clients = [
                Client(i, cfg, cd.train, cd.test, data.global_test, cd.heldout, **kw) for i, cd in enumerate(data.clients)
            ]
            channel = Channel(self.clients)
        else:
            self.clients = []  # remote: reachable only through the channel
        self.channel = channel
        self.host = HOSTS[cfg.method](cfg)

    # -- checkpoints -------------------------------------------------------------------------
    def _checkpoint(self, round_: int) -> None:
        root = self.out / CHECKPOINTS
        tmp = root / f"round-{round_}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.server.save(tmp / "server")
        self.channel.save_clients(tmp, round_)
        self.host.save_state(tmp / "host")
        (tmp / "state.json").write_text(json.dumps({"round": round_}))
        final = root / f"round-{round_}"
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in root.glob("round-*"):
            if old != final:
                shutil.rmtree(old)

    def _restore(self) -> int:
        """Load the latest checkpoint; returns the round it finished, or -1 if there is none."""
        found = sorted((self.out / CHECKPOINTS).glob("round-[0-9]*"), key=lambda p: int(p.name.split("-")[1]))
        found = [p for p in found if (p / "state.json").exists()]
        if not found:
            return -1
        path = found[-1]
        done = json.loads((path / "state.json").read_text())["round"]
        self.server.load(path / "server")
        self.channel.load_clients(path, done)
        self.host.load_state(path / "host")
        for name in (METRICS, SELECTIONS):
            rows = [r for r in _read_jsonl(self.out / name) if r["round"] <= done]
            (self.out / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        self.ui.log(f"resuming after round {done} from {path}")
        return done

    def read_metrics(self) -> list[dict]:
        return _read_jsonl(self.out / METRICS)

    # -- rounds ------------------------------------------------------------------------------
    def _evaluate_and_log(self, ctx: RoundContext) -> list[dict]:
        ctx.record("server", self.server.evaluate())
        for i in range(ctx.num_clients):
            ctx.call(i, Evaluate(ctx.round))
        sent, received = self.channel.take_counts()
        rows = []
        for p in [self.server, *self.channel.clients]:
            rows += metric_rows(ctx.round, p.name, p.role, ctx.stats.get(p.name, {}), sent.get(p.name, 0), received.get(p.name, 0))
        _append_jsonl(self.out / METRICS, rows)
        _append_jsonl(self.out / SELECTIONS, ctx.selections)
        return rows

    def _round_zero(self) -> list[dict]:
        ctx = RoundContext(0, self.cfg, self.server, self.channel, self.ui)
        ctx.record("server", self.server.prepare())
        for i in range(ctx.num_clients):
            ctx.call(i, Prepare())
        return self._evaluate_and_log(ctx)

    def run(self, resume: bool = False, on_round=None) -> list[dict]:
        """Run (or continue) all rounds; `on_round(round, rows)` is called after each."""
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(dump_config(self.cfg))
        done = self._restore() if resume else -1
        if done < 0:
            for name in (METRICS, SELECTIONS):
                (self.out / name).unlink(missing_ok=True)
            rows = self._round_zero()
            self._checkpoint(0)
            if on_round:
                on_round(0, rows)
            done = 0
        for t in range(done + 1, self.cfg.rounds + 1):
            start = time.perf_counter()
            ctx = RoundContext(t, self.cfg, self.server, self.channel, self.ui)
            self.host.run_round(ctx)
            ctx.record("server", {"seconds/round": time.perf_counter() - start})
            rows = self._evaluate_and_log(ctx)
            self._checkpoint(t)
            if on_round:
                on_round(t, rows)
        return self.read_metrics()
