"""LaDa's server half and the plug-in factory `with_lada`. One round, against the paper (arXiv 2602.18749):

  select (the host's `select` point):
    candidate pool C_t       m public samples (`Server.candidate_pool`)
    server paths             the LLM's paths on C_t, verified against the gold answers
    for each client k:
        Candidates  ->       client: features phi_k, filter F_k^down picks b samples, its own paths,
                             DARD pairs (lada/client.py, lada/transfer.py `choose`); it answers with
                             its picks, the pairs that need the server's reference log-probs (computed
                             now, before anyone learns) and, where the host trains the server, its
                             correct paths on the questions the server got wrong (the up offer)
        F_k^up               picks b' of client k's offer for the LLM (`choose`, the server as learner)
  transfer (the host's `transfer` point):
    the host's own loss on the picks (`lada.host_loss=add`: FedMKT's KD, FedCoLLM's distillation)
    for each client k:
        References  ->       client: DARD update, reward r_k, F_k^down update (`learn`, `rewards`)
    up                       the server's DARD on the up pairs (client right, server wrong), once it has
                             `lada.up_min_pairs` of them (`lada.up_loss=none`: only the host's loss above
                             teaches it); reward: the question now solved
  evaluate                 (the runner)

Client-side filter state lives with each client; the server keeps its up filters (`UpFilters`).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

import numpy as np

from fedlada.config import RunConfig
from fedlada.data.answers import is_correct
from fedlada.data.types import Example
from fedlada.federation.state import load_tree, save_tree
from fedlada.filter.reward import solved_reward
from fedlada.hosts.base import Exchange, Host, RoundContext
from fedlada.lada.client import HANDLERS
from fedlada.lada.messages import MESSAGES, Candidate, Candidates, PickReport, Reference, References, RefRequest, UpOffer
from fedlada.lada.transfer import (
    Offered,
    Pending,
    Pick,
    RewardProbe,
    choose,
    learn,
    own_data_pairs,
    per_token_nll,
    reward_probe,
    rewards,
    selector_for,
    update,
)
from fedlada.models import LM
from fedlada.seeding import derive_seed

UP_HELDOUT = 64  # at most this many of a client's unpicked novel questions form the up reward's held-out slice


@dataclass
class CarriedPick:
    """An up pick the server has not trained on yet (too few pairs that round), with its reference."""

    client: str
    pick: Pick
    reference: tuple[float, int, float, int]  # the client's log-probs of its path and of the server's

    def to_tree(self) -> dict:
        return {"client": self.client, "pick": asdict(self.pick), "reference": list(self.reference)}

    @classmethod
    def from_tree(cls, tree: dict) -> CarriedPick:
        return cls(tree["client"], Pick(**tree["pick"]), tuple(tree["reference"]))


@dataclass
class UpState:
    """The server's side of LaDa across rounds: its filters F_k^up (a saved state per client name), the up
    picks carried over to the next round, and (`lada.up_reward=heldout`) each client's latest held-out
    slice: public questions with gold solutions that the client solved and the server did not."""

    filters: dict[str, dict] = field(default_factory=dict)
    carried: list[CarriedPick] = field(default_factory=list)
    heldout: dict[str, list[Example]] = field(default_factory=dict)


@dataclass
class UpLearner:
    """The server as the up reward sees it, one client at a time: its model, with that client's held-out
    slice as its own held-out data (what `transfer.reward_probe` and `rewards` read)."""

    lm: LM
    name: str
    cfg: RunConfig
    heldout: list[Example]


@dataclass
class LadaExchange(Exchange):
    """LaDa's `select` result: the host's `Exchange` (the picks), plus what its `transfer` needs."""

    candidates: dict[str, Candidate] = field(default_factory=dict)
    references: dict[int, list[Reference]] = field(default_factory=dict)  # client index -> DARD references
    up_picks: dict[int, Pending] = field(default_factory=dict)  # client index -> F_k^up's picks
    # (client index, sample id) of an up pick -> the client's log-probs of its path and of the server's
    up_references: dict[tuple[int, str], tuple[float, int, float, int]] = field(default_factory=dict)


def offered_candidates(server, round_: int) -> tuple[list, list[Candidate], dict[str, float]]:
    """The round's pool C_t, the server's verified paths on it as candidates, and the path stats."""
    pool = server.candidate_pool(round_)
    offer, stats = server.teacher_paths(round_, pool)
    expanded = [e for e in pool for _ in range(server.cfg.round.paths_per_question)]
    nll = per_token_nll(server.lm, offer.prompts, offer.paths, server.cfg.runtime.eval_batch_size)
    candidates = [Candidate(sid, prompt, e.answer, path, ok, float(x), e.domain)
                  for sid, prompt, e, path, ok, x in zip(offer.sample_ids, offer.prompts, expanded, offer.paths,
                                                         offer.correct, nll)]
    return pool, candidates, stats


class Lada:
    """Server-side half of the plug-in: offers candidates, computes references, runs the up direction."""

    def __init__(self, cfg: RunConfig, up: bool, up_loss: str = "lada"):
        self.cfg, self.up, self.up_loss = cfg, up, up_loss
        self.state = UpState()

    def select(self, ctx: RoundContext) -> LadaExchange:
        """Every client's filter picks its down samples; the server's F_k^up picks from client k's offer."""
        server = ctx.server
        pool, candidates, stats = offered_candidates(server, ctx.round)
        ctx.record("server", stats)
        # A server that learned from the clients can write, for one public question, a path equal to a
        # client's private solution of another (on `standard`: a wrong path for a mul question that is the
        # worked solution of the private 24*3). Where the run audits, such a candidate is not offered.
        private = ctx.channel.private_matches([c.path for c in candidates])
        candidates = [c for c, hit in zip(candidates, private) if hit is None]
        ctx.record("server", {"lada/withheld_private": float(sum(hit is not None for hit in private))})
        ex = LadaExchange(pool, {}, {}, server_selective=self.cfg.lada.up_teacher == "better",
                          candidates={c.sample_id: c for c in candidates})
        for i, pair_offer in ctx.call_active(lambda i: Candidates(ctx.round, candidates, self.up)).items():
            ex.down[i] = pair_offer.picks
            ex.references[i] = teacher_references(server, pair_offer.needs_reference)
            if self.up:
                self._choose_up(ctx, ex, i, pair_offer.up)
                if self.cfg.lada.host_up == "exchanged":  # the host's loss on the server: every sample of the pair
                    both = set(ex.down[i]) | set(ex.up.get(i, []))
                    ex.up[i] = [e.id for e in ex.examples(both)]
        if self.up and self.cfg.lada.host_up == "pool":  # the host's anchor on every candidate, nobody answering
            ex.server_also = [e.id for e in pool]
        return ex

    def transfer(self, ctx: RoundContext, ex: LadaExchange) -> None:
        """DARD on the picks: each client with the server's references, then the server on its up pairs."""
        reports = ctx.call_all({i: References(ctx.round, refs) for i, refs in ex.references.items()})
        for i, report in reports.items():
            if report is not None:
                self._log(ctx, ctx.channel.clients[i].name, "down", report.picks, ex.candidates)
        if self.up:
            self._learn_up(ctx, ex)

    def _choose_up(self, ctx: RoundContext, ex: LadaExchange, k: int, offers: list[UpOffer]) -> None:
        """F_k^up picks among client k's paths on questions the server got wrong; the pair is the client's
        path against the server's wrong one (a question both solve teaches the server nothing new)."""
        server, cfg, name = ctx.server, self.cfg, ctx.channel.clients[k].name
        offered = up_offered(offers, ex.candidates)
        ctx.record("server", {f"lada/up_offered/{name}": float(len(offers)), f"lada/up_novel/{name}": float(len(offered))})
        if not offered:
            return
        selector = selector_for(cfg, self.state.filters.get(name), f"server-up-{k}", f"filter_up_{k}")
        pending, _ = choose(server, selector, offered, cfg.lada.up_budget, ctx.round)
        self.state.filters[name] = selector.state_dict()
        ex.up_picks[k] = pending
        ex.up[k] = [p.sample_id for p in pending.picks]
        if cfg.lada.up_reward == "heldout":
            self._keep_heldout(ctx, ex, name, offered, set(ex.up[k]))
        by_id = {u.sample_id: u for u in offers}
        for sid in ex.up[k]:
            u = by_id[sid]
            ex.up_references[k, sid] = (u.own_logp, u.own_tokens, u.other_logp, u.other_tokens)

    def _keep_heldout(self, ctx: RoundContext, ex: LadaExchange, name: str, offered: list[Offered],
                      picked: set[str]) -> None:
        """Client `name`'s novel questions that F_k^up left out, with their public gold solutions, become
        its held-out slice (a client with none this round keeps its last one)."""
        gold = {e.id: e for e in ex.pool}
        rest = sorted({o.sample_id for o in offered if o.sample_id not in picked})
        if rest:
            rng = random.Random(derive_seed(self.cfg.seed, name, "up-heldout", ctx.round))
            self.state.heldout[name] = [gold[sid] for sid in sorted(rng.sample(rest, min(UP_HELDOUT, len(rest))))]

    def _learn_up(self, ctx: RoundContext, ex: LadaExchange) -> None:
        """The server learns all up pairs of the round (and those carried over) in one phase, once there are
        `lada.up_min_pairs`; each F_k^up then gets the rewards of its own picks."""
        server, cfg = ctx.server, self.cfg
        carried = list(self.state.carried)
        for k, pending in ex.up_picks.items():
            name = ctx.channel.clients[k].name
            carried += [CarriedPick(name, p, ex.up_references[k, p.sample_id]) for p in pending.picks]
        host_only = self.up_loss == "none"  # the host's loss has taught the server on the picks already
        if not carried or (not host_only and len(carried) < cfg.lada.up_min_pairs):
            self.state.carried = carried
            ctx.record("server", {"lada/up_carried": float(len(carried))})
            return
        self.state.carried = []
        pending = Pending(ctx.round, [c.pick for c in carried])
        pairs, refs = pending.pairs(), [c.reference for c in carried]
        local = own_data_pairs(server, len(pairs), ctx.round) if cfg.lada.loss == "dard" and not host_only else []
        rows_by_client: dict[str, list[int]] = {}
        for j, c in enumerate(carried):
            rows_by_client.setdefault(c.client, []).append(j)
        probes = self._heldout_probes(server, carried, rows_by_client) if cfg.lada.up_reward == "heldout" else {}
        stats = {} if host_only else learn(server, pairs, refs, local, ctx.round, "server")
        reward = self._up_rewards(ctx, server, pending, rows_by_client, probes)
        for name, rows in rows_by_client.items():
            k = next(i for i, c in enumerate(ctx.channel.clients) if c.name == name)
            saved = self.state.filters.get(name)
            if saved is not None and saved.get("awaiting_update", True):  # else F_k^up chose nothing to update
                selector = selector_for(cfg, saved, f"server-up-{k}", f"filter_up_{k}")
                update(selector, Pending(ctx.round, [carried[j].pick for j in rows]), reward[rows])
                self.state.filters[name] = selector.state_dict()
            self._log(ctx, name, "up", [
                PickReport(p.sample_id, p.features, p.f1, p.f2, p.score, float(r), True, p.learner_correct, p.own_domain)
                for p, r in ((carried[j].pick, reward[j]) for j in rows)], ex.candidates)
        ctx.record("server", {**stats, "lada/reward_up": float(np.mean(reward)), "lada/up_pairs": float(len(pairs)),
                              "lada/up_carried": 0.0})

    def _heldout_probes(self, server, carried: list[CarriedPick], rows_by_client: dict[str, list[int]]
                        ) -> dict[str, tuple[UpLearner, Pending, RewardProbe]]:
        """Before the server learns: per client with a held-out slice, its picks' gradient cosines with the
        server's loss on that slice."""
        probes = {}
        for name, rows in rows_by_client.items():
            if self.state.heldout.get(name):
                view = UpLearner(server.lm, f"server-up-{name}", self.cfg, self.state.heldout[name])
                picks = Pending(0, [carried[j].pick for j in rows])
                probes[name] = (view, picks, reward_probe("heldout", view, picks))
        return probes

    def _up_rewards(self, ctx: RoundContext, server, pending: Pending, rows_by_client: dict[str, list[int]],
                    probes: dict[str, tuple[UpLearner, Pending, RewardProbe]]) -> np.ndarray:
        if self.cfg.lada.up_reward == "nll_drop":
            return rewards(RewardProbe("nll_drop"), server, pending)[0]
        if self.cfg.lada.up_reward == "heldout":  # a client with no slice yet teaches its filter nothing (0)
            reward = np.zeros(len(pending.picks))
            for name, (view, picks, probe) in probes.items():
                reward[rows_by_client[name]], logged = rewards(probe, view, picks)
                ctx.record("server", {f"{k.replace('lada/', 'lada/up_')}/{name}": v for k, v in logged.items()})
            return reward
        picks = pending.picks
        paths = server.lm.generate([p.prompt for p in picks], self.cfg.round.max_new_tokens,
                                   batch_size=self.cfg.runtime.eval_batch_size)
        return solved_reward([p.learner_correct for p in picks], [is_correct(g, p.answer) for g, p in zip(paths, picks)])

    def _log(self, ctx: RoundContext, client: str, direction: str, picks: list[PickReport],
             candidates: dict[str, Candidate]) -> None:
        def num(x: float):
            return None if np.isnan(x) else round(float(x), 5)

        for p in picks:
            ctx.selections.append({
                "round": ctx.round, "client": client, "direction": direction, "sample_id": p.sample_id,
                "domain": candidates[p.sample_id].domain if p.sample_id in candidates else None,
                "features": [round(float(x), 5) for x in p.features],
                "f1": num(p.f1), "f2": num(p.f2), "score": num(p.score), "reward": round(float(p.reward), 5),
                "teacher_correct": p.teacher_correct, "learner_correct": p.learner_correct,
                **({"own_domain": p.own_domain} if direction == "down" else {}),
            })

    def save_state(self, path) -> None:
        save_tree(path, {"up_filters": self.state.filters, "up_carried": [c.to_tree() for c in self.state.carried],
                         "up_heldout": {k: [asdict(e) for e in v] for k, v in self.state.heldout.items()}})

    def load_state(self, path) -> None:
        tree = load_tree(path) or {}
        self.state = UpState(tree.get("up_filters", {}), [CarriedPick.from_tree(c) for c in tree.get("up_carried", [])],
                             {k: [Example(**e) for e in v] for k, v in tree.get("up_heldout", {}).items()})


def teacher_references(server, requests: list[RefRequest]) -> list[Reference]:
    """The teacher's log-probs of each pair, with its own model and tokenizer (the DARD reference)."""
    if not requests:
        return []
    bs, prompts = server.cfg.runtime.eval_batch_size, [r.prompt for r in requests]
    given = [r.given for r in requests]
    c_lp, c_n = server.lm.sequence_logprobs(prompts, [r.chosen for r in requests], batch_size=bs, given=given)
    r_lp, r_n = server.lm.sequence_logprobs(prompts, [r.rejected for r in requests], batch_size=bs, given=given)
    return [Reference(r.sample_id, float(a), int(b), float(c), int(d))
            for r, a, b, c, d in zip(requests, c_lp.cpu(), c_n.cpu(), r_lp.cpu(), r_n.cpu())]


def up_offered(offers: list[UpOffer], candidates: dict[str, Candidate]) -> list[Offered]:
    """The up direction's candidates: a client's correct paths on the questions the server got wrong, each
    to be learned against the server's wrong path (the DARD pair). Where the server was right the client's
    path teaches it nothing new, so it is not offered."""
    return [Offered(u.sample_id, candidates[u.sample_id].prompt, candidates[u.sample_id].answer, u.path, True,
                    -u.own_logp / max(u.own_tokens, 1), flag=True, own_domain=True,
                    learner_path=candidates[u.sample_id].path, learner_correct=False)
            for u in offers if not candidates[u.sample_id].correct]


def host_loss_for(host_cls: type[Host], cfg: RunConfig) -> str:
    """`lada.host_loss`, or the host's default (`Host.lada_host_loss`)."""
    return cfg.lada.host_loss or host_cls.lada_host_loss


def host_teaches_server(host_cls: type[Host], cfg: RunConfig) -> bool:
    """Whether X's own loss trains the server under X+lada (FedMKT's KD, FedCoLLM's distillation)."""
    return host_cls.transfer is not Host.transfer and host_loss_for(host_cls, cfg) == "add"


def up_loss_for(host_cls: type[Host], cfg: RunConfig) -> str:
    """`lada.up_loss`, or its default: `none` where the host's own loss teaches the server, so that LaDa
    chooses what the server learns from and the host's loss is how (on `standard`, the server's own DARD
    or SFT phase on ~90 up pairs after FedMKT's KD cost it 14-22 points, docs/results.md); `lada` where
    nothing else would teach it (`standalone+lada`)."""
    if cfg.lada.up_loss is not None:
        return cfg.lada.up_loss
    return "none" if host_teaches_server(host_cls, cfg) else "lada"


def with_lada(host_cls: type[Host]) -> type[Host]:
    """`X+lada`: host X whose exchange LaDa's filters choose (`select`), with DARD added to X's own loss on
    the picks or in its place (`transfer`, `lada.host_loss`); both directions where X trains the server."""

    class WithLada(host_cls):
        name = f"{host_cls.name}+lada"
        messages = (*host_cls.messages, *MESSAGES)
        client_handlers = {**host_cls.client_handlers, **HANDLERS}

        @classmethod
        def check_config(cls, cfg: RunConfig) -> None:
            super().check_config(cfg)
            if host_cls.server_learns and up_loss_for(host_cls, cfg) == "none":
                if not host_teaches_server(host_cls, cfg):
                    raise ValueError(f"lada.up_loss=none: nothing would teach the server under {cls.name} (its host "
                                     "has no loss of its own on the picks, or lada.host_loss=replace drops it)")
                if cfg.lada.up_reward == "heldout":
                    raise ValueError("lada.up_reward=heldout needs lada.up_loss=lada: the held-out probe needs the "
                                     "server before it learns, and under up_loss=none the host's loss has moved it by then")

        def __init__(self, cfg: RunConfig):
            super().__init__(cfg)
            self.lada = Lada(cfg, up=host_cls.server_learns, up_loss=up_loss_for(host_cls, cfg))
            self.host_loss = host_loss_for(host_cls, cfg)

        def select(self, ctx: RoundContext) -> LadaExchange:
            return self.lada.select(ctx)

        def transfer(self, ctx: RoundContext, exchange: LadaExchange) -> None:
            if self.host_loss == "add":
                super().transfer(ctx, exchange)
            else:
                self.deliver(ctx)
            self.lada.transfer(ctx, exchange)

        def save_state(self, path) -> None:
            self.lada.save_state(path)

        def load_state(self, path) -> None:
            self.lada.load_state(path)

    WithLada.__name__ = WithLada.__qualname__ = f"{host_cls.__name__}Lada"
    return WithLada
