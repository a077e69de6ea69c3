"""The server and the clients: each owns its model and its data, and they meet only in messages.

A client answers messages (`handle`); the server side is driven by the host's round logic,
which reaches clients only through a `Channel`. Nothing here knows whether it runs in one
process or under Flower.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Callable

import torch

from fedlada.config import ModelConfig, ParticipantConfig, RunConfig, TrainConfig
from fedlada.data.answers import is_correct
from fedlada.data.types import Example
from fedlada.eval import evaluate
from fedlada.federation.messages import Evaluate, LocalTrain, Message, Prepare, Report, TeacherPaths
from fedlada.federation.state import load_tree, save_tree
from fedlada.models import LM, load_model, train_sft
from fedlada.progress import UI
from fedlada.seeding import derive_seed


def fingerprint(*parts) -> str:
    """A short stable hash of JSON-able parts (configs, datasets) for cache keys."""
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def init_seed(cfg: RunConfig, name: str, model: ModelConfig) -> int:
    """The seed of a participant's initial weights: its own, or its `init_group`'s (shared)."""
    if model.init_group is not None:
        return derive_seed(cfg.seed, "init-group", model.init_group)
    return derive_seed(cfg.seed, name, "init")


def _examples_fingerprint(examples: list[Example]) -> str:
    return fingerprint([[e.prompt, e.solution] for e in examples])


class Participant:
    """What the server and the clients share: a model, own training data, base training with a cache."""

    name: str
    role: str

    def __init__(self, participant_cfg: ParticipantConfig, cfg: RunConfig, train: list[Example], *, device, cache_dir: Path,
                 ui: UI):
        self.participant_cfg, self.cfg, self.train = participant_cfg, cfg, train
        self.device, self.cache_dir, self.ui = device, cache_dir, ui
        self.lm: LM | None = None
        # Plug-in state that must survive rounds and processes (filters, work pending between two
        # messages): a tree of JSON values and numpy arrays, saved next to the weights.
        self.state: dict = {}

    def _sft(self, prompts: list[str], completions: list[str], train_cfg: TrainConfig, seed: int, label: str) -> dict:
        with self.ui.task(f"{self.name}: {label}", train_cfg.steps) as advance:
            return train_sft(self.lm, prompts, completions, train_cfg, seed=seed, progress=lambda step, loss: advance(1))

    def prepare(self) -> dict[str, float]:
        """Round-0 model: base training on own data; reused from the cache when config and data match."""
        # Only what shapes the base model is in the key. init_group joined the config later; leaving
        # it out while unset keeps earlier caches valid.
        exclude = {"transfer_lr": True}
        if self.participant_cfg.model.init_group is None:
            exclude["model"] = {"init_group"}
        key = fingerprint(
            self.participant_cfg.model_dump(mode="json", exclude=exclude), self.cfg.seed, self.name, _examples_fingerprint(self.train)
        )
        path = self.cache_dir / "base" / f"{self.name}-{key}"
        start = time.perf_counter()
        if (path / "fedlada.json").exists():
            self.lm = LM.load(path, device=self.device, cache_dir=self.cache_dir)
            self.ui.log(f"{self.name}: base model from cache {path}")
            return {"seconds/prepare": time.perf_counter() - start, "cached": 1.0}
        self.lm = load_model(self.participant_cfg.model, device=self.device, seed=init_seed(self.cfg, self.name, self.participant_cfg.model),
                             cache_dir=self.cache_dir)
        stats = self._sft(
            [e.prompt for e in self.train], [e.solution for e in self.train], self.participant_cfg.base,
            derive_seed(self.cfg.seed, self.name, "base"), "base training",
        )
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        self.lm.save(tmp)
        try:
            tmp.rename(path)
        except OSError:  # another run cached the same model first; theirs is identical
            shutil.rmtree(tmp)
        return {"seconds/prepare": time.perf_counter() - start, "loss/base": stats["loss_last"], "cached": 0.0}

    def local_train(self, round_: int, train_cfg: TrainConfig) -> dict[str, float]:
        stats = self._sft(
            [e.prompt for e in self.train], [e.solution for e in self.train], train_cfg,
            derive_seed(self.cfg.seed, self.name, "local", round_), f"round {round_} local",
        )
        return {"seconds/local": stats["seconds"], "loss/local": stats["loss_last"]}

    def mixed_sft(self, round_: int, prompts: list[str], completions: list[str], label: str) -> dict[str, float]:
        """SFT on transferred paths with a share of own data mixed in, so the learner keeps its domain."""
        if not prompts:
            return {f"samples/{label}": 0.0}
        frac = self.cfg.round.transfer_local_fraction
        n_local = round(len(prompts) * frac / (1 - frac)) if prompts else 0
        rng = random.Random(derive_seed(self.cfg.seed, self.name, label, round_))
        local = rng.choices(self.train, k=n_local) if n_local else []
        stats = self._sft(
            prompts + [e.prompt for e in local], completions + [e.solution for e in local],
            self.participant_cfg.transfer(self.cfg.round).sized(len(prompts) + n_local),
            derive_seed(self.cfg.seed, self.name, label, round_, "sft"), f"round {round_} {label}",
        )
        return {f"seconds/{label}": stats["seconds"], f"loss/{label}": stats["loss_last"], f"samples/{label}": float(len(prompts)),
                f"steps/{label}": float(stats["steps"])}

    def accuracy(self, examples: list[Example]) -> tuple[float, int]:
        rt = self.cfg.runtime
        res = evaluate(self.lm, examples, max_new_tokens=self.cfg.round.max_new_tokens, batch_size=rt.eval_batch_size)
        return res.accuracy, res.n

    def save(self, path: Path) -> None:
        self.lm.save(path / "model")
        save_tree(path / "state", self.state)

    def load(self, path: Path) -> None:
        self.lm = LM.load(path / "model", device=self.device, cache_dir=self.cache_dir)
        self.state = load_tree(path / "state") or {}


ClientHandler = Callable[["Client", Message], Message]
CLIENT_HANDLERS: dict[type[Message], ClientHandler] = {}


def register_handlers(handlers: dict[type[Message], ClientHandler]) -> None:
    """Add `fn(client, msg) -> reply` verbs to every client (how hosts and LaDa add theirs; called by
    `fedlada.methods.register_protocol`)."""
    CLIENT_HANDLERS.update(handlers)


class Client(Participant):
    role = "client"

    def __init__(self, index: int, cfg: RunConfig, train: list[Example], test: list[Example], global_test: list[Example],
                 heldout: list[Example] = (), **kw):
        self.name = f"client-{index}"
        self.index = index
        super().__init__(cfg.clients[index], cfg, train, **kw)
        self.test, self.global_test, self.heldout = test, global_test, list(heldout)
        self.domains = sorted({e.domain for e in train})
        self._auditor = None

    def private_matches(self, texts: list[str]) -> list[str | None]:
        """Per text, the id of this client's private example (train, test, held-out) whose prompt or
        solution it reproduces, by the privacy audit's rules (federation/audit.py), or None.

        A small model can write, for a public question, a verbatim solution it was trained on: a handler
        that replies with its model's own generations must drop (or replace) those first, or the audit
        stops the reply, and with it the run."""
        if self._auditor is None:
            from fedlada.federation.audit import Auditor

            self._auditor = Auditor({self.name: [*self.train, *self.test, *self.heldout]})
        return self._auditor.matches(texts)

    def handle(self, msg: Message) -> Message:
        if type(msg) in CLIENT_HANDLERS:
            return CLIENT_HANDLERS[type(msg)](self, msg)
        if isinstance(msg, Prepare):
            return Report(self.prepare())
        if isinstance(msg, LocalTrain):
            local_cfg = self.cfg.round.local.model_copy(update={"steps": msg.steps})
            return Report(self.local_train(msg.round, local_cfg))
        if isinstance(msg, TeacherPaths):
            keep = [i for i, ok in enumerate(msg.correct) if ok]
            return Report(self.mixed_sft(msg.round, [msg.prompts[i] for i in keep], [msg.paths[i] for i in keep], "distill"))
        if isinstance(msg, Evaluate):
            start = time.perf_counter()
            local_acc, local_n = self.accuracy(self.test)
            global_acc, global_n = self.accuracy(self.global_test)
            return Report({
                "local_test/accuracy": local_acc, "local_test/n": local_n,
                "global_test/accuracy": global_acc, "global_test/n": global_n,
                "seconds/eval": time.perf_counter() - start,
            })
        raise TypeError(f"{self.name}: no handler for {type(msg).__name__}")


class Server(Participant):
    """The LLM side: general corpus G, public set P with gold answers, global test set."""

    role = "server"
    name = "server"

    def __init__(self, cfg: RunConfig, corpus: list[Example], public: list[Example], global_test: list[Example], **kw):
        super().__init__(cfg.server, cfg, corpus, **kw)
        self.public, self.global_test = public, global_test

    def candidate_pool(self, round_: int) -> list[Example]:
        """m public samples, fresh each round, without replacement until P is used up (then reshuffled)."""
        m = min(self.cfg.round.candidates, len(self.public))
        start = (round_ - 1) * m
        chosen = []
        while len(chosen) < m:
            epoch, offset = divmod(start + len(chosen), len(self.public))
            order = list(range(len(self.public)))
            random.Random(derive_seed(self.cfg.seed, "pool", epoch)).shuffle(order)
            chosen.extend(order[offset : offset + m - len(chosen)])
        return [self.public[i] for i in chosen]

    def teacher_paths(self, round_: int, pool: list[Example]) -> tuple[TeacherPaths, dict[str, float]]:
        """n paths per public question, verified against the public gold answer."""
        rc = self.cfg.round
        start = time.perf_counter()
        n = rc.paths_per_question
        paths = self.lm.generate(
            [e.prompt for e in pool], rc.max_new_tokens, temperature=rc.temperature, num_return_sequences=n,
            batch_size=self.cfg.runtime.eval_batch_size, seed=derive_seed(self.cfg.seed, "server-paths", round_),
        )
        expanded = [e for e in pool for _ in range(n)]
        correct = [is_correct(p, e.answer) for p, e in zip(paths, expanded)]
        msg = TeacherPaths(round_, [e.id for e in expanded], [e.prompt for e in expanded], paths, correct)
        stats = {"seconds/paths": time.perf_counter() - start, "paths/correct": sum(correct) / max(1, len(correct))}
        return msg, stats

    def evaluate(self) -> dict[str, float]:
        """Global-test accuracy, and per domain (`accuracy_by_domain/<d>`): the server's own weak spots are
        what the clients can teach it, and a gain there must be visible next to any loss elsewhere."""
        start = time.perf_counter()
        rt = self.cfg.runtime
        res = evaluate(self.lm, self.global_test, max_new_tokens=self.cfg.round.max_new_tokens, batch_size=rt.eval_batch_size)
        by_domain: dict[str, list[bool]] = {}
        for example, ok in zip(self.global_test, res.correct):
            by_domain.setdefault(example.domain, []).append(ok)
        return {"global_test/accuracy": res.accuracy, "global_test/n": res.n, "seconds/eval": time.perf_counter() - start,
                **{f"accuracy_by_domain/{d}": sum(v) / len(v) for d, v in sorted(by_domain.items())}}


def torch_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)
