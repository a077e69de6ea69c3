"""LaDa's server half and the plug-in factory `with_lada`. One round, against the paper (arXiv 2602.18749):

    candidate pool C_t       m public samples (`Server.candidate_pool`)
    server paths             the LLM's paths on C_t, verified against the gold answers
    for each client k (LLM -> SLM):
        Candidates  ->       client: features phi_k, filter F_k^down picks b samples, its own paths,
                             DARD pairs (lada/client.py, lada/transfer.py `choose`)
        References  ->       client: DARD update, reward r_k, F_k^down update (`learn`, `rewards`)
    for each client k (SLM -> LLM), when the host trains the server:
        the client's correct paths on C_t came with its PairOffer; F_k^up picks b' of them for the
        LLM, with the same `choose` / `learn` / `rewards` as the down direction, the server as learner
    evaluate                 (the runner)

Client-side filter state lives with each client; the server keeps its up filters (`UpFilters`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fedlada.config import RunConfig
from fedlada.federation.state import load_tree, save_tree
from fedlada.lada import client as _client_handlers  # noqa: F401  (registers the client's handlers)
from fedlada.lada.messages import Candidate, Candidates, PairOffer, PickReport, Reference, References, RefRequest
from fedlada.lada.transfer import (
    Offered,
    Pending,
    RewardProbe,
    choose,
    learn,
    own_data_pairs,
    per_token_nll,
    rewards,
    selector_for,
    update,
)

if TYPE_CHECKING:  # hosts import this package to build their `+lada` variants
    from fedlada.hosts.base import Host, RoundContext


@dataclass
class UpFilters:
    """The server's filters F_k^up, one saved state per client name."""

    states: dict[str, dict] = field(default_factory=dict)


class Lada:
    """Server-side half of the plug-in: offers candidates, computes references, runs the up direction."""

    def __init__(self, cfg: RunConfig, up: bool):
        self.cfg, self.up = cfg, up
        self.filters = UpFilters()

    def exchange(self, ctx: RoundContext) -> None:
        server, bs = ctx.server, self.cfg.runtime.eval_batch_size
        pool = server.candidate_pool(ctx.round)
        offer, stats = server.teacher_paths(ctx.round, pool)
        ctx.record("server", stats)
        expanded = [e for e in pool for _ in range(self.cfg.round.paths_per_question)]
        nll = per_token_nll(server.lm, offer.prompts, offer.paths, bs)
        candidates = [Candidate(sid, prompt, e.answer, path, ok, float(x), e.domain)
                      for sid, prompt, e, path, ok, x in zip(offer.sample_ids, offer.prompts, expanded, offer.paths,
                                                             offer.correct, nll)]
        by_id = {c.sample_id: c for c in candidates}
        offers: list[PairOffer | None] = []
        for i in range(ctx.num_clients):
            pair_offer = ctx.call(i, Candidates(ctx.round, candidates, self.up))
            offers.append(pair_offer)
            if pair_offer is None:  # the client failed this round
                continue
            report = ctx.call(i, References(ctx.round, self._references(server, pair_offer.needs_reference)))
            if report is not None:
                self._log(ctx, ctx.channel.clients[i].name, "down", report.picks, by_id)
        if self.up:
            self._learn_up(ctx, by_id, offers)

    def _references(self, server, requests: list[RefRequest]) -> list[Reference]:
        """The teacher's log-probs of each pair, with its own model and tokenizer (the DARD reference)."""
        if not requests:
            return []
        bs, prompts = self.cfg.runtime.eval_batch_size, [r.prompt for r in requests]
        given = [r.given for r in requests]
        c_lp, c_n = server.lm.sequence_logprobs(prompts, [r.chosen for r in requests], batch_size=bs, given=given)
        r_lp, r_n = server.lm.sequence_logprobs(prompts, [r.rejected for r in requests], batch_size=bs, given=given)
        return [Reference(r.sample_id, float(a), int(b), float(c), int(d))
                for r, a, b, c, d in zip(requests, c_lp.cpu(), c_n.cpu(), r_lp.cpu(), r_n.cpu())]

    def _learn_up(self, ctx: RoundContext, by_id: dict[str, Candidate], offers: list[PairOffer | None]) -> None:
        """Each F_k^up picks from client k's correct paths; the server learns all picks in one phase; each
        F_k^up then gets the rewards of its own picks."""
        server, cfg = ctx.server, self.cfg
        chosen: list[tuple[int, object, Pending]] = []
        pairs, refs = [], []
        for k, pair_offer in enumerate(offers):
            if pair_offer is None or not pair_offer.up:
                continue
            name = ctx.channel.clients[k].name
            offered = [
                Offered(u.sample_id, by_id[u.sample_id].prompt, by_id[u.sample_id].answer, u.path, True,
                        -u.own_logp / max(u.own_tokens, 1), flag=not by_id[u.sample_id].correct, own_domain=True,
                        learner_path=by_id[u.sample_id].path, learner_correct=by_id[u.sample_id].correct)
                for u in pair_offer.up
            ]
            selector = selector_for(cfg, self.filters.states.get(name), f"server-up-{k}", f"filter_up_{k}")
            pending, _ = choose(server, selector, offered, cfg.lada.up_budget, ctx.round)
            self.filters.states[name] = selector.state_dict()
            scalars = {u.sample_id: (u.own_logp, u.own_tokens, u.other_logp, u.other_tokens) for u in pair_offer.up}
            for sid, pair in zip(pending.pair_ids(), pending.pairs()):
                pairs.append(pair)
                refs.append(scalars[sid] if pair[2] is not None else None)  # the client's log-probs: the reference
            chosen.append((k, selector, pending))
        if not pairs:
            return
        local = own_data_pairs(server, len(pairs), ctx.round) if cfg.lada.loss == "dard" else []
        stats = learn(server, pairs, refs, local, ctx.round, "server")
        all_rewards = []
        for k, selector, pending in chosen:
            reward, _ = rewards(RewardProbe("nll_drop"), server, pending)  # the up direction keeps nll_drop for now
            update(selector, pending, reward)
            name = ctx.channel.clients[k].name
            self.filters.states[name] = selector.state_dict()
            all_rewards.extend(reward)
            self._log(ctx, name, "up", [
                PickReport(p.sample_id, p.features, p.f1, p.f2, p.score, float(r), True, p.learner_correct, p.own_domain)
                for p, r in zip(pending.picks, reward)], by_id)
        ctx.record("server", {**stats, "lada/reward_up": float(np.mean(all_rewards))})

    def _log(self, ctx: RoundContext, client: str, direction: str, picks: list[PickReport], by_id: dict) -> None:
        def num(x: float):
            return None if np.isnan(x) else round(float(x), 5)

        for p in picks:
            ctx.selections.append({
                "round": ctx.round, "client": client, "direction": direction, "sample_id": p.sample_id,
                "domain": by_id[p.sample_id].domain, "features": [round(float(x), 5) for x in p.features],
                "f1": num(p.f1), "f2": num(p.f2), "score": num(p.score), "reward": round(float(p.reward), 5),
                "teacher_correct": p.teacher_correct, "learner_correct": p.learner_correct,
                **({"own_domain": p.own_domain} if direction == "down" else {}),
            })

    def save_state(self, path) -> None:
        save_tree(path, {"up_filters": self.filters.states})

    def load_state(self, path) -> None:
        self.filters = UpFilters((load_tree(path) or {}).get("up_filters", {}))


def with_lada(host_cls: type[Host]) -> type[Host]:
    """`X+lada`: host X whose public-sample exchange is LaDa's filter + DARD (both directions if X trains the server)."""

    class WithLada(host_cls):
        name = f"{host_cls.name}+lada"

        def __init__(self, cfg: RunConfig):
            super().__init__(cfg)
            self.lada = Lada(cfg, up=host_cls.server_learns)

        def exchange(self, ctx: RoundContext) -> None:
            self.deliver(ctx)
            self.lada.exchange(ctx)

        def save_state(self, path) -> None:
            self.lada.save_state(path)

        def load_state(self, path) -> None:
            self.lada.load_state(path)

    WithLada.__name__ = WithLada.__qualname__ = f"{host_cls.__name__}Lada"
    return WithLada
