"""`fedcollm`: FedCoLLM-style co-tuning for homogeneous clients.

Each round, after the clients' local SFT on private data:

1. every client sends its trainable weights (all of them, or only its LoRA adapters) and the server
   averages them, weighted by the clients' training-set sizes (FedAvg) into one aggregate SLM;
2. on the round's public samples (prompt + gold solution) the server distils mutually between its LLM
   and the aggregate: each learns `L_LM + lambda * KL(other || self)`, the other's distributions taken
   before either learns (top-k, moved across tokenizers as in FedMKT when the two differ). The
   aggregate learns on the samples of the down direction, the LLM on those of the up direction: every
   candidate for `fedcollm`; for `fedcollm+lada` the union of LaDa's down picks over the clients, and
   for the LLM every candidate too (`lada.host_up=pool`, the default) or the up picks only (`up_picks`),
   and, by default under LaDa (`lada.up_teacher=better`), the aggregate's distribution only where it
   fits the gold solution better than the LLM's own, which is the target elsewhere (FedMKT's
   `greater` selection): a FedAvg of domain specialists is near 0% after round 1 and, distilled on
   every sample, takes the LLM down with it (docs/results.md);
3. the aggregate goes back to every client.

FedAvg needs the clients to share an architecture and a starting point: the config check demands
identical client models and, for from-scratch presets, a common `model.init_group`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedlada.config import ParticipantConfig, RunConfig
from fedlada.distill.align import Sparse
from fedlada.federation.messages import Arrays, Message, Report
from fedlada.federation.participants import Client, init_seed
from fedlada.hosts.base import Exchange, Host, RoundContext
from fedlada.hosts.fedmkt import KDPhase, fuse, knowledge, learn, receive
from fedlada.models import LM, load_model
from fedlada.progress import UI


@dataclass
class SendWeights(Message):
    """Server -> client: reply with your trainable weights (`Arrays`, with your training-set size)."""

    round: int


@dataclass
class SetWeights(Message):
    """Server -> client: replace your trainable weights with these (the aggregate)."""

    round: int
    arrays: dict[str, np.ndarray]


# the FedAvg weight; not "n", which the reply's values would overwrite in the client's metrics rows
TRAIN_SIZE = "fedcollm/train_examples"


def on_send_weights(client: Client, msg: SendWeights) -> Arrays:
    state = {k: v.numpy() for k, v in client.lm.state_dict_cpu().items()}
    return Arrays(msg.round, state, {TRAIN_SIZE: float(len(client.train))})


def on_set_weights(client: Client, msg: SetWeights) -> Report:
    client.lm.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in msg.arrays.items()})
    return Report({})


def fedavg(states: list[dict[str, np.ndarray]], weights: list[float]) -> dict[str, np.ndarray]:
    """Weighted average of parameter dicts with the same keys (weights need not sum to one)."""
    if not states or len(states) != len(weights):
        raise ValueError(f"fedavg: {len(states)} states for {len(weights)} weights")
    w = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
    return {k: sum(wi * s[k].astype(np.float64) for wi, s in zip(w, states)).astype(states[0][k].dtype) for k in states[0]}


def better_of(lm: LM, teacher: list[Sparse], teacher_ce: np.ndarray, prompts: list[str], solutions: list[str],
              top_k: int, batch_size: int) -> tuple[list[Sparse], float]:
    """Per sample, the teacher's distribution (on `lm`'s tokens) where its cross-entropy on the gold solution
    is below `lm`'s own, else `lm`'s own, which anchors `lm` where the teacher has nothing to add; and the
    share of samples that took the teacher's."""
    _, own, own_ce = knowledge(lm, 0, prompts, solutions, top_k, batch_size)
    return fuse([[(o, oc), (t, tc)] for o, oc, t, tc in zip(own, own_ce, teacher, teacher_ce)], "greater")


@dataclass
class Aggregate:
    """The server's copy of the aggregated client model as a KD learner (`fedmkt.Learner`): it learns at
    the clients' learning rate and seeds as "aggregate"."""

    lm: LM
    name: str
    cfg: RunConfig
    participant_cfg: ParticipantConfig
    ui: UI


class FedCoLLM(Host):
    name = "fedcollm"
    server_learns = True
    messages = (SendWeights, SetWeights)
    client_handlers = {SendWeights: on_send_weights, SetWeights: on_set_weights}

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.slm = None  # the aggregate, rebuilt from the clients' weights every round

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        models = [c.model for c in cfg.clients]
        if any(m != models[0] for m in models):
            raise ValueError("fedcollm averages client models: every clients[*].model must be the same")
        if models[0].name.startswith("tiny-") and models[0].init_group is None:
            raise ValueError("fedcollm: from-scratch clients need a common start; set clients[*].model.init_group")

    def local_step(self, ctx: RoundContext) -> None:
        super().local_step(ctx)
        # FedAvg over the clients that answered (a failed one replies None under on_client_failure=skip)
        replies = list(ctx.call_active(lambda i: SendWeights(ctx.round)).values())
        avg = fedavg([r.arrays for r in replies], [r.values[TRAIN_SIZE] for r in replies])
        ctx.record("server", {"fedcollm/averaged": float(len(replies))})
        if self.slm is None:
            server = ctx.server
            model = self.cfg.clients[0].model
            self.slm = load_model(model, device=server.device, seed=init_seed(self.cfg, "client-0", model),
                                  cache_dir=server.cache_dir)
        self.slm.load_state_dict({k: torch.from_numpy(v) for k, v in avg.items()})

    def deliver(self, ctx: RoundContext) -> None:
        state = {k: v.numpy() for k, v in self.slm.state_dict_cpu().items()}
        ctx.call_active(lambda i: SetWeights(ctx.round, state))

    def transfer(self, ctx: RoundContext, exchange: Exchange) -> None:
        server, co, bs = ctx.server, self.cfg.fedcollm, self.cfg.runtime.eval_batch_size
        aggregate = Aggregate(self.slm, "aggregate", self.cfg, self.cfg.clients[0], ctx.ui)  # a client model
        pending = []
        for learner, teacher, samples in ((server, self.slm, exchange.server_samples()),
                                          (aggregate, server.lm, exchange.union("down"))):
            prompts, solutions = [e.prompt for e in samples], [e.solution for e in samples]
            if not samples:
                continue
            # the teacher's distributions are taken before either model learns
            teacher_k, _, teacher_ce = knowledge(teacher, ctx.round, prompts, solutions, co.top_k, bs)
            targets = receive(teacher_k, learner.lm, solutions, server.cache_dir)
            stats = {}
            if learner is server and exchange.server_selective:
                targets, chosen = better_of(server.lm, targets, teacher_ce, prompts, solutions, co.top_k, bs)
                stats = {"fedcollm/teacher_chosen": chosen}
            pending.append((learner, stats, KDPhase("fedcollm", prompts, solutions, targets, 1.0, co.kd_weight)))
        for learner, stats, phase in pending:
            stats = {**stats, **learn(learner, ctx.round, phase)}
            ctx.record("server", stats if learner is server else {f"aggregate/{k}": v for k, v in stats.items()})
        self.deliver(ctx)
