"""The in-process runner: every participant in one process, rounds as in the LaDa paper (arXiv 2602.18749; src/fedlada/lada/server.py).

Round 0 is the state after each model's own preparation and before any exchange. After every
round the runner writes metrics and a checkpoint (weights as safetensors, the rest as JSON), so
`resume` continues from the last finished round and ends with the same numbers as an
uninterrupted run (every random choice is seeded from config seed, round and participant).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

import torch
from transformers.utils import logging as hf_logging

from fedlada.config import ConfigError, RunConfig, config_from_dict, default_cache_dir, dump_config
from fedlada.errors import CheckpointError, FedladaError
from fedlada.federation.audit import auditor_for
from fedlada.federation.channel import Channel
from fedlada.federation.fit import checked_data
from fedlada.federation.messages import Evaluate, Prepare
from fedlada.federation.participants import Client, Server, torch_device
from fedlada.hosts import RoundContext
from fedlada.methods import build_host, register_protocol, results_difference
from fedlada.progress import UI

hf_logging.disable_progress_bar()  # per-save "Writing model shards" bars would drown our progress

METRICS = "metrics.jsonl"
SELECTIONS = "selections.jsonl"
SPLITS = ("local_test", "global_test")
CHECKPOINTS = "checkpoints"
LOCK = ".lock"


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


def _try_lock(f) -> bool:
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextmanager
def run_lock(out: Path):
    """Hold `out` for this process while it runs: a second run (or `--resume`) on the same directory would
    interleave its rounds with ours in metrics.jsonl and the checkpoints. The operating system releases
    the lock when the process ends, however it ends, so a killed run never leaves the directory locked."""
    with open(out / LOCK, "a") as f:  # never written: a refused or failed run leaves the directory as it was
        if not _try_lock(f):
            raise FedladaError(f"{out} is in use by another run; wait for it to end, or give this run another "
                               "--out")
        yield


def in_use(out: Path) -> bool:
    """Whether a run holds `out` now (see `run_lock`): lets `fedlada compare` leave a run that another
    process is working on to it instead of starting one that would be refused."""
    if not (out / LOCK).exists():
        return False
    with open(out / LOCK, "a") as f:
        return not _try_lock(f)  # closing the file releases a lock taken here


class Runner:
    """The round loop on the server side.

    Without `channel`, every client lives in this process behind the in-process `Channel`. With one
    (the Flower channel), the clients live elsewhere: the runner holds the server and the host only,
    and `channel.clients` are the clients' names.
    """

    def __init__(self, cfg: RunConfig, out_dir: Path, ui: UI | None = None, channel: Channel | None = None):
        self.cfg, self.out, self.ui = cfg, Path(out_dir), ui or UI()
        self.host = build_host(cfg)  # a config its method cannot run fails here, before any data is built
        register_protocol(cfg.method)
        if cfg.runtime.threads:
            torch.set_num_threads(cfg.runtime.threads)
        device = torch_device(cfg.runtime.device)
        cache = default_cache_dir(cfg)
        data = checked_data(cfg)
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
        if cfg.runtime.audit:
            channel.auditor = auditor_for(data)

    # -- checkpoints -------------------------------------------------------------------------
    def _checkpoint(self, round_: int) -> None:
        """Write `checkpoints/round-N` so that an interruption at any point leaves a usable checkpoint.

        Everything goes to `round-N.tmp`; `state.json` (the round and a manifest of every file with its
        size) is written last and synced, then one rename makes the checkpoint; only then are older
        ones removed. `_restore` takes only complete `round-N` directories and checks the manifest."""
        root = self.out / CHECKPOINTS
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f"round-{round_}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.server.save(tmp / "server")
        self.channel.save_clients(tmp, round_)
        self.host.save_state(tmp / "host")
        (tmp / "config.yaml").write_text(dump_config(self.cfg))
        manifest = {str(f.relative_to(tmp)): f.stat().st_size for f in sorted(tmp.rglob("*")) if f.is_file()}
        with open(tmp / "state.json", "w") as f:
            json.dump({"round": round_, "files": manifest}, f)
            f.flush()
            os.fsync(f.fileno())
        final = root / f"round-{round_}"
        if final.exists():  # a round written again (never in a normal run): keep it until the swap
            old = root / f"round-{round_}.old"
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
        tmp.rename(final)
        for other in root.iterdir():
            if other != final:
                shutil.rmtree(other, ignore_errors=True) if other.is_dir() else other.unlink()

    def _latest_checkpoint(self) -> Path | None:
        done = []
        for p in (self.out / CHECKPOINTS).glob("round-*"):
            n = p.name.removeprefix("round-")
            if n.isdigit() and (p / "state.json").exists():  # round-N.tmp / .old: unfinished or replaced
                done.append((int(n), p))
        return max(done)[1] if done else None

    def _verify_checkpoint(self, path: Path) -> int:
        """The round of a checkpoint, after checking it is whole and was written by this config."""
        hint = f"delete {self.out} (or pass another --out) to start afresh"
        try:
            state = json.loads((path / "state.json").read_text())
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{path}/state.json is unreadable ({type(err).__name__}); {hint}") from None
        for rel, size in state.get("files", {}).items():
            f = path / rel
            if not f.is_file():
                raise CheckpointError(f"checkpoint {path}: {rel} is missing; {hint}")
            if f.stat().st_size != size:
                raise CheckpointError(f"checkpoint {path}: {rel} is damaged ({f.stat().st_size} of {size} bytes); {hint}")
        saved = path / "config.yaml" if (path / "config.yaml").exists() else self.out / "config.yaml"
        if saved.exists():
            try:
                old = yaml.safe_load(saved.read_text())
            except yaml.YAMLError:
                raise CheckpointError(f"{saved}: invalid YAML; {hint}") from None
            try:  # through the schema, so a key added since the checkpoint counts as its default
                old = config_from_dict(old or {})
            except ConfigError as err:  # a key removed or a value refused since
                raise CheckpointError(f"checkpoint {path}: its config {saved} no longer loads "
                                      f"({str(err).splitlines()[0]}); {hint}") from None
            diff = results_difference(old, self.cfg)
            if diff:
                raise CheckpointError(
                    f"checkpoint {path} was written by a different config ({diff}); resume with the saved "
                    f"config ({saved}) or {hint}"
                )
        return int(state["round"])

    def _restore(self) -> int:
        """Load the latest checkpoint; returns the round it finished, or -1 if there is none."""
        path = self._latest_checkpoint()
        if path is None:
            return -1
        done = self._verify_checkpoint(path)
        if done > self.cfg.rounds:
            raise CheckpointError(f"checkpoint {path} is of round {done}, past rounds={self.cfg.rounds}: a run can be "
                                  f"extended by --resume, not cut; resume with rounds >= {done}")
        try:
            self.server.load(path / "server")
            self.channel.load_clients(path, done)
            self.host.load_state(path / "host")
        except CheckpointError:
            raise
        except Exception as err:  # a damaged file the manifest could not tell (a checkpoint from before it)
            raise CheckpointError(f"checkpoint {path} cannot be loaded ({type(err).__name__}: "
                                  f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}); delete {self.out} "
                                  "(or pass another --out) to start afresh") from err
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
        ctx.call_active(lambda i: Evaluate(ctx.round))
        # A client that failed this round has no accuracy rows (it was not evaluated); the server's
        # rows say which one failed, on which message and why.
        ctx.record("server", {f"failed/{e.client}": f"{e.message}: {e.reason}" for e in ctx.failed.values()})
        auditor = self.channel.auditor
        ctx.record("server", auditor.take_counts() if auditor is not None else {"audit/off": 1.0})
        sent, received = self.channel.take_counts()
        rows = []
        for p in [self.server, *self.channel.clients]:
            rows += metric_rows(ctx.round, p.name, p.role, ctx.stats.get(p.name, {}), sent.get(p.name, 0), received.get(p.name, 0))
        _append_jsonl(self.out / METRICS, rows)
        _append_jsonl(self.out / SELECTIONS, ctx.selections)
        return rows

    def _put_back_failed(self, ctx: RoundContext) -> None:
        """Failed clients go back to the last checkpoint (the previous round's), never half-trained."""
        if not ctx.failed:
            return
        path = self._latest_checkpoint()
        for i, err in sorted(ctx.failed.items()):
            self.channel.restore_client(i, path, ctx.round - 1)
            self.ui.log(f"round {ctx.round}: {err.client} put back to its round {ctx.round - 1} checkpoint")

    def _round_zero(self) -> list[dict]:
        ctx = RoundContext(0, self.cfg, self.server, self.channel, self.ui)
        ctx.record("server", self.server.prepare())
        ctx.call_active(lambda i: Prepare())
        return self._evaluate_and_log(ctx)

    def run(self, resume: bool = False, on_round=None) -> list[dict]:
        """Run (or continue) all rounds; `on_round(round, rows)` is called after each."""
        self.out.mkdir(parents=True, exist_ok=True)
        with run_lock(self.out):
            return self._run(resume, on_round)

    def _run(self, resume: bool, on_round) -> list[dict]:
        done = self._restore() if resume else -1  # checks the saved config before it is overwritten
        (self.out / "config.yaml").write_text(dump_config(self.cfg))
        if done < 0:
            for name in (METRICS, SELECTIONS):
                (self.out / name).unlink(missing_ok=True)
            shutil.rmtree(self.out / CHECKPOINTS, ignore_errors=True)  # never mix in another run's rounds
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
            self._put_back_failed(ctx)
            self._checkpoint(t)
            if on_round:
                on_round(t, rows)
        return self.read_metrics()
