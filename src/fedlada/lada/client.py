"""LaDa's client half: the down direction (server -> this client) as two message handlers.

`Candidates` -> choose (features, filter F_k^down, own paths, pairs) -> `PairOffer`;
`References` -> learn (DARD with the server's references) -> rewards -> filter update -> `SelectionReport`.
Between the two, the pending transfer and the filter live in `client.state` (saved with the client),
so each message could be served by a fresh process, as in a Flower deployment.
"""

from __future__ import annotations

import time

from fedlada.data.answers import is_correct
from fedlada.distill.trainer import contrast_views
from fedlada.federation.participants import Client
from fedlada.lada.messages import Candidate, Candidates, PairOffer, PickReport, References, RefRequest, SelectionReport, UpOffer
from fedlada.lada.transfer import (
    Offered,
    Pending,
    choose,
    learn,
    own_data_pairs,
    reward_probe,
    rewards,
    selector_for,
    update,
)

FILTER, PENDING = "filter_down", "pending"


def _logps(lm, prompts: list[str], paths: list[str], batch_size: int) -> tuple[list[float], list[int]]:
    logp, ntok = lm.sequence_logprobs(prompts, paths, batch_size=batch_size)
    return [float(x) for x in logp.cpu()], [int(x) for x in ntok.cpu()]


def down_offered(client: Client, cands: list[Candidate]) -> list[Offered]:
    """F_k^down's pool: the candidates whose server path is verified correct. A wrong path makes no DARD
    pair (and `distill` skips it too), so a pick of one would spend the budget on nothing."""
    return [Offered(c.sample_id, c.prompt, c.answer, c.path, c.correct, c.teacher_nll, flag=c.correct,
                    own_domain=c.domain in client.domains) for c in cands if c.correct]


def on_candidates(client: Client, msg: Candidates) -> PairOffer:
    cfg, lada = client.cfg, client.cfg.lada
    cands = msg.candidates
    offered = down_offered(client, cands)
    if offered:
        selector = selector_for(cfg, client.state.get(FILTER), client.name, FILTER)
        pending, values = choose(client, selector, offered, lada.budget, msg.round)
        client.state[FILTER] = selector.state_dict()  # select moves the filter's state (scaler, generator)
    else:  # the server solved none of the round's candidates: it has nothing to teach this client now
        pending, values = Pending(msg.round, []), {}
    pairs = pending.pairs()
    pending.local = own_data_pairs(client, len(pairs), msg.round) if lada.loss == "dard" else []
    client.state[PENDING] = pending.to_tree()
    # A small model can write, for a public question, a solution it was trained on verbatim: such a path
    # stays on the client (its pair then takes the frozen learner as reference), never in a message.
    needs_reference = []
    if lada.ref == "teacher":
        views = contrast_views(pairs, lada.contrast)  # the reference must score what the learner's term scores
        needs_reference = [RefRequest(sid, pair[0], chosen, rejected, given)
                           for sid, pair, (given, chosen, rejected) in zip(pending.pair_ids(), pairs, views)
                           if pair[2] is not None]
        private = client.private_matches([r.given + r.rejected for r in needs_reference])
        values["lada/withheld_private"] = float(sum(hit is not None for hit in private))
        needs_reference = [r for r, hit in zip(needs_reference, private) if hit is None]
    reply = PairOffer([p.sample_id for p in pending.picks], needs_reference, values=values)
    if msg.offer_up:
        reply.up = _up_offer(client, [c for c in cands if not c.correct])
    return reply


def _up_offer(client: Client, wrong: list) -> list[UpOffer]:
    """This client's correct paths on the candidates the server got wrong: only there can it teach the
    server something new. Its own log-probs of both paths come along (the server's DARD reference)."""
    lm, cfg = client.lm, client.cfg
    bs = cfg.runtime.eval_batch_size
    paths = lm.generate([c.prompt for c in wrong], cfg.round.max_new_tokens, batch_size=bs)
    good = [(c, path) for c, path in zip(wrong, paths) if is_correct(path, c.answer)]
    good = [g for g, hit in zip(good, client.private_matches([path for _, path in good])) if hit is None]
    prompts = [c.prompt for c, _ in good]
    own_lp, own_n = _logps(lm, prompts, [path for _, path in good], bs)
    other_lp, other_n = _logps(lm, prompts, [c.path for c, _ in good], bs)
    return [UpOffer(c.sample_id, path, *vals) for (c, path), *vals in zip(good, own_lp, own_n, other_lp, other_n)]


def on_references(client: Client, msg: References) -> SelectionReport:
    cfg, lada = client.cfg, client.cfg.lada
    pending = Pending.from_tree(client.state.pop(PENDING))
    if not pending.picks:
        return SelectionReport([], {"lada/selected": 0.0})
    pairs = pending.pairs()
    refs = None
    if lada.ref == "teacher":  # the server's log-probs where it has them; the frozen learner's for the rest
        by_id = {r.sample_id: r for r in msg.references}
        refs = [(by_id[sid].chosen_logp, by_id[sid].chosen_tokens, by_id[sid].rejected_logp, by_id[sid].rejected_tokens)
                if pair[2] is not None and sid in by_id else None for sid, pair in zip(pending.pair_ids(), pairs)]
    start = time.perf_counter()
    probe = reward_probe(lada.reward, client, pending)
    t_probe = time.perf_counter() - start
    stats = learn(client, pairs, refs, pending.local, msg.round, client.name)
    start = time.perf_counter()
    reward, extra = rewards(probe, client, pending)
    t_reward = time.perf_counter() - start + t_probe
    start = time.perf_counter()
    selector = selector_for(cfg, client.state.get(FILTER), client.name, FILTER)
    update(selector, pending, reward)
    client.state[FILTER] = selector.state_dict()
    values = {**stats, **extra, "seconds/reward": t_reward, "seconds/filter_update": time.perf_counter() - start,
              "lada/reward": float(reward.mean()) if len(reward) else 0.0, "lada/selected": float(len(reward))}
    picks = [PickReport(p.sample_id, p.features, p.f1, p.f2, p.score, float(r), p.path_correct, p.learner_correct,
                        p.own_domain) for p, r in zip(pending.picks, reward)]
    return SelectionReport(picks, values)


HANDLERS = {Candidates: on_candidates, References: on_references}
