"""`fedmkt`: FedMKT (arXiv 2406.02224), federated mutual knowledge transfer by top-k logits.

Each round, after the clients' local SFT on private data (the host local step):

1. the server takes the round's public samples (prompt + gold solution) and computes its top-k
   next-token distributions on every solution token (`Knowledge`), before any learning;
2. each client computes its own top-k on the same samples (its reply, also taken before learning),
   moves the server's onto its own tokens and vocabulary (DTW alignment and minimum-edit-distance
   vocabulary mapping, `distill.align`), picks per sample the distribution of the model with the
   lower cross-entropy on the solution (`greater`; or `weighted_mean`) and trains on
   `a * L_LM + (1 - a) * L_KD`;
3. the server does the same with every client's distributions and its own (selective knowledge
   fusion), so the LLM learns from the SLMs too.

Which samples go which way is the host's `select` (`hosts/base.py`): FedMKT exchanges every
candidate with every client; under `fedmkt+lada`, LaDa's filters choose per pair and direction, so a
client learns only on its down picks and answers only on its up picks (`Knowledge.learn`, `.ask`).

What crosses the wire is public text one way and, per token, k ids and k log-probs both ways, plus
each sender's vocabulary (the text of every token id; 3.1 MB for Gemma 3's 262,144 tokens, under a
kilobyte for a `tiny-*` one) so that the receiver can map it onto its own: the bytes per round
grow with k and the solution length, which `compare.md` sets against LaDa's text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from fedlada.config import ParticipantConfig, RunConfig
from fedlada.distill.align import Sparse, project, select_targets, vocab_map
from fedlada.distill.kd import train_kd
from fedlada.federation.messages import Message
from fedlada.federation.participants import Client
from fedlada.hosts.base import Exchange, Host, RoundContext
from fedlada.models import LM
from fedlada.progress import UI
from fedlada.seeding import derive_seed


@dataclass
class Knowledge(Message):
    """Top-k next-token distributions of one model on public (prompt, solution) pairs.

    Self-contained across tokenizers: `vocab` is the sender's whole vocabulary (each id's text), which
    the receiver maps onto its own once and then finds in its cache (`align.vocab_map`), and the
    arrays hold sender ids: `offsets` [n+1] (sample i owns rows offsets[i]:offsets[i+1]), `labels` [T]
    (the solution's tokens, then the end token), `topk` [T, k], `logp` [T, k], `ce` [n] (mean
    per-token cross-entropy on the labels, the selection metric). The server fills in the texts;
    client replies leave them empty (the server has them).
    """

    round: int
    sample_ids: list[str]
    prompts: list[str]
    solutions: list[str]
    vocab: list[str]
    arrays: dict[str, np.ndarray]
    values: dict[str, float] = field(default_factory=dict)
    learn: list[str] = field(default_factory=list)  # server -> client: the ids the client trains on
    ask: list[str] = field(default_factory=list)  # server -> client: the ids whose distributions it sends back

    def subset(self, rows: list[int]) -> Knowledge:
        """The same distributions on samples `rows` only (texts, arrays and ids cut alike)."""
        a, off = self.arrays, self.arrays["offsets"]
        spans = [np.arange(off[i], off[i + 1]) for i in rows]
        tokens = np.concatenate(spans) if spans else np.zeros(0, dtype=np.int64)
        arrays = {"offsets": np.cumsum([0] + [len(x) for x in spans]).astype(np.int64),
                  **{k: a[k][tokens] for k in ("labels", "topk", "logp")}, "ce": a["ce"][rows]}

        def cut(xs: list[str]) -> list[str]:
            return [xs[i] for i in rows] if xs else []

        return Knowledge(self.round, cut(self.sample_ids), cut(self.prompts), cut(self.solutions), self.vocab, arrays,
                         dict(self.values))


def knowledge(lm, round_: int, prompts: list[str], solutions: list[str], k: int, batch_size: int
              ) -> tuple[Knowledge, list[Sparse], np.ndarray]:
    """`lm`'s Knowledge message (texts left empty), and the same distributions as its own targets."""
    res = lm.topk_logprobs(prompts, solutions, k, batch_size=batch_size)
    labels = np.concatenate([r[0] for r in res]) if res else np.zeros(0, dtype=np.int64)
    topk = np.concatenate([r[2] for r in res]) if res else np.zeros((0, 1), dtype=np.int64)
    ce = np.array([-float(r[1].mean()) for r in res], dtype=np.float32)
    arrays = {
        "offsets": np.cumsum([0] + [len(r[0]) for r in res]).astype(np.int64),
        "labels": labels.astype(np.int32),
        "topk": topk.astype(np.int32),
        "logp": np.concatenate([r[3] for r in res]).astype(np.float32) if res else np.zeros((0, 1), np.float32),
        "ce": ce,
    }
    msg = Knowledge(round_, [], [], [], lm.vocab_strings(), arrays)
    own = []
    for r in res:
        p = np.exp(r[3].astype(np.float64))
        own.append(Sparse(r[2].astype(np.int64), p / p.sum(1, keepdims=True)))
    return msg, own, ce


def receive(msg: Knowledge, lm, solutions: list[str], cache_dir: Path | None = None) -> list[Sparse]:
    """The sender's distributions on `lm`'s tokens and vocabulary, one `Sparse` per sample; the
    vocabulary map is kept under `cache_dir` (built once per pair of vocabularies, in minutes for
    real ones), or computed each call without one."""
    a = msg.arrays
    off = a["offsets"]
    if len(off) < 2:
        return []
    strings = lm.vocab_strings()
    to_receiver = vocab_map(msg.vocab, strings, cache_dir).astype(np.int64)
    sender_eos = msg.vocab[a["labels"][off[1] - 1]]  # every sample ends with the end token
    to_receiver[[i for i, s in enumerate(msg.vocab) if s == sender_eos]] = lm.eos_id
    eos = strings[lm.eos_id]
    out = []
    for i, ids in enumerate(lm.token_ids(solutions)):
        rows = slice(off[i], off[i + 1])
        sender = [msg.vocab[t] for t in a["labels"][rows]]
        out.append(project(sender, a["topk"][rows], a["logp"][rows], [strings[t] for t in ids] + [eos], to_receiver))
    return out


def fuse(candidates: list[list[tuple[Sparse, float]]], strategy: str) -> tuple[list[Sparse], float]:
    """FedMKT's selection, per sample, among its candidate distributions with their cross-entropies (the
    learner's own first); also the share of samples whose (`greater`) choice was not the learner's own."""
    targets, foreign = [], 0
    for cands in candidates:
        ces = np.array([ce for _, ce in cands])
        targets.append(select_targets([d for d, _ in cands], ces, strategy))
        foreign += int(np.argmin(ces) != 0)
    return targets, foreign / max(1, len(candidates))


class Learner(Protocol):
    """Who learns in a KD phase: a `Participant`, or FedCoLLM's aggregate client model."""

    lm: LM
    name: str  # seeds the phase and names its progress bar
    cfg: RunConfig
    participant_cfg: ParticipantConfig  # its transfer learning rate
    ui: UI


@dataclass
class KDPhase:
    """What a KD phase teaches: prompts, solutions and the fused target distributions on them, and the
    weights of the solutions' cross-entropy and of the KD term."""

    label: str
    prompts: list[str]
    solutions: list[str]
    targets: list[Sparse]
    lm_weight: float
    kd_weight: float


def learn(learner: Learner, round_: int, phase: KDPhase) -> dict[str, float]:
    """One KD phase (`round.transfer` at the learner's learning rate, sized by the data) with a progress
    bar, seeded by run seed, learner, phase and round."""
    train_cfg = learner.participant_cfg.transfer(learner.cfg.round).sized(len(phase.prompts))
    with learner.ui.task(f"{learner.name}: round {round_} {phase.label}", train_cfg.steps) as advance:
        return train_kd(learner.lm, phase.prompts, phase.solutions, phase.targets, train_cfg, lm_weight=phase.lm_weight,
                        kd_weight=phase.kd_weight, seed=derive_seed(learner.cfg.seed, learner.name, phase.label, round_),
                        progress=advance)


def on_knowledge(client: Client, msg: Knowledge) -> Knowledge:
    """Fuse and learn on the `learn` samples; answer with this client's distributions on the `ask` ones."""
    mkt, bs = client.cfg.fedmkt, client.cfg.runtime.eval_batch_size
    reply, own, own_ce = knowledge(client.lm, msg.round, msg.prompts, msg.solutions, mkt.top_k, bs)
    rows = _rows(msg.sample_ids, msg.learn)
    taught = msg.subset(rows)
    server = receive(taught, client.lm, taught.solutions, client.cache_dir)
    targets, foreign = fuse([[(own[i], own_ce[i]), pair] for i, pair in zip(rows, zip(server, taught.arrays["ce"]))],
                            mkt.strategy)
    stats = learn(client, msg.round, KDPhase("fedmkt", taught.prompts, taught.solutions, targets, mkt.lm_weight,
                                             1 - mkt.lm_weight))
    reply.sample_ids = list(msg.sample_ids)
    reply = reply.subset(_rows(msg.sample_ids, msg.ask))
    reply.values = {**stats, "fedmkt/teacher_chosen": foreign}
    return reply


def _rows(sample_ids: list[str], wanted: list[str]) -> list[int]:
    keep = set(wanted)
    return [i for i, sid in enumerate(sample_ids) if sid in keep]


class FedMKT(Host):
    name = "fedmkt"
    server_learns = True
    messages = (Knowledge,)
    client_handlers = {Knowledge: on_knowledge}

    def transfer(self, ctx: RoundContext, exchange: Exchange) -> None:
        """Server knowledge on each pair's samples, the clients' on theirs back; the server fuses, per
        sample it asked for, its own distribution with those of the clients that sent one."""
        server, mkt, bs = ctx.server, self.cfg.fedmkt, self.cfg.runtime.eval_batch_size
        samples = exchange.examples({e.id for e in [*exchange.union("down"), *exchange.server_samples()]})
        ids = [e.id for e in samples]
        msg, own, own_ce = knowledge(server.lm, ctx.round, [e.prompt for e in samples], [e.solution for e in samples],
                                     mkt.top_k, bs)
        msg.sample_ids, msg.prompts, msg.solutions = ids, [e.prompt for e in samples], [e.solution for e in samples]
        sent: dict[str, list[tuple[Sparse, float]]] = {}  # sample id -> the clients' distributions, client order
        parts = {}
        for k in sorted(set(exchange.down) | set(exchange.up)):
            down, up = exchange.down.get(k, []), exchange.up.get(k, [])
            parts[k] = msg.subset(_rows(ids, [*down, *up]))
            parts[k].learn, parts[k].ask = list(down), list(up)
        for reply in ctx.call_all(parts).values():
            if reply is None:  # a failed client (runtime.on_client_failure=skip) contributes no knowledge
                continue
            for sid, dist, ce in zip(reply.sample_ids, receive(reply, server.lm, reply_solutions(reply, msg),
                                                               server.cache_dir), reply.arrays["ce"]):
                sent.setdefault(sid, []).append((dist, ce))
        also = set(exchange.server_also)  # where no client answers, the server's own distribution is the target
        rows = [i for i, sid in enumerate(ids) if sid in sent or sid in also]
        if not rows:
            return
        targets, foreign = fuse([[(own[i], own_ce[i]), *sent.get(ids[i], [])] for i in rows], mkt.strategy)
        stats = learn(server, ctx.round, KDPhase("fedmkt", [msg.prompts[i] for i in rows], [msg.solutions[i] for i in rows],
                                                 targets, mkt.lm_weight, 1 - mkt.lm_weight))
        ctx.record("server", {**stats, "fedmkt/teacher_chosen": foreign})


def reply_solutions(reply: Knowledge, sent: Knowledge) -> list[str]:
    """The solutions of a client's reply, which carries ids only (the server has the texts)."""
    by_id = dict(zip(sent.sample_ids, sent.solutions))
    return [by_id[sid] for sid in reply.sample_ids]
