"""LaDa as a plug-in: `with_lada(Host)` replaces a host's exchange with LaDa's.

Per round (DESIGN section 3), for each client k:

1. `Candidates` (server -> client): the m public candidates with the server's paths, their
   verification and the server's per-token NLL of them.
2. The client computes features, its down filter F_k^down picks b samples, it writes its own paths
   on them and builds DARD pairs. It replies `PairOffer`: the (chosen, rejected) texts that need the
   teacher as reference and, if the host trains the server, its correct paths on the candidates.
3. The server scores those pairs with its model (the teacher reference) and sends `DardUpdate`.
4. The client trains (DARD or, as ablation, SFT), measures its rewards, updates F_k^down and replies
   `SelectionReport` (ids, features, f1/f2/scores, rewards) for selections.jsonl.

Up direction (hosts whose server learns): per client, F_k^up picks b' of the client's offered
correct paths, preferring knowledge the LLM lacks; the server trains on all chosen pairs, then each
F_k^up gets its rewards. Client-side filter state lives in `client.state` (saved with the client),
so every message could be served by a fresh process, as in a Flower deployment.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import numpy as np

from fedlada.config import RunConfig
from fedlada.data.answers import is_correct
from fedlada.distill import PathRecord, build_pairs, local_pairs
from fedlada.distill.trainer import train_dard
from fedlada.federation.messages import Message, register
from fedlada.federation.participants import Client, client_handler
from fedlada.federation.state import load_tree, save_tree
from fedlada.filter import make_selector
from fedlada.filter.reward import heldout_alignment_reward, learnability_reward
from fedlada.filter.features import QuestionEmbedder, feature_matrix, n_features
from fedlada.hosts.base import Host, RoundContext
from fedlada.seeding import derive_seed

OWN_DATA_SAMPLE = 512  # own prompts used for the domain centroid


@register
@dataclass
class Candidates(Message):
    round: int
    sample_ids: list[str]
    prompts: list[str]
    answers: list[str]
    paths: list[str]
    correct: list[bool]
    teacher_nll: list[float]
    offer_up: bool
    domains: list[str] = field(default_factory=list)  # public labels; read only by filter=oracle and the logs


@register
@dataclass
class PairOffer(Message):
    prompts: list[str]
    chosen: list[str]
    rejected: list[str]
    up_ids: list[str] = field(default_factory=list)
    up_paths: list[str] = field(default_factory=list)
    up_own_logp: list[float] = field(default_factory=list)
    up_own_ntok: list[int] = field(default_factory=list)
    up_other_logp: list[float] = field(default_factory=list)
    up_other_ntok: list[int] = field(default_factory=list)
    values: dict[str, float] = field(default_factory=dict)


@register
@dataclass
class DardUpdate(Message):
    round: int
    ref_chosen: list[float]
    ref_chosen_ntok: list[int]
    ref_rejected: list[float]
    ref_rejected_ntok: list[int]


@register
@dataclass
class SelectionReport(Message):
    values: dict[str, float]
    sample_ids: list[str]
    arrays: dict[str, np.ndarray]


def _selector(run: RunConfig, state: dict, key: str, who: str):
    sel = make_selector(run.lada.filter, n_features(run.lada.embedding_dim), seed=derive_seed(run.seed, who, key),
                        alpha=run.lada.alpha)
    if key in state:
        sel.load_state_dict(state[key])
    return sel


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64)


def _nll(lm, prompts, paths, batch_size) -> np.ndarray:
    logp, ntok = lm.sequence_logprobs(prompts, paths, batch_size=batch_size)
    return -_np(logp) / np.maximum(_np(ntok), 1)


def own_pairs(learner, n_exchanged: int, round_: int) -> list:
    """Pairs on the learner's own data, in the same share of the phase as in `distill`
    (`round.transfer_local_fraction`): they keep the learner on its own domain (both directions)."""
    run = learner.run
    frac = run.round.transfer_local_fraction
    rng = random.Random(derive_seed(run.seed, learner.name, "local-pairs", round_))
    local = rng.sample(learner.train, min(round(n_exchanged * frac / (1 - frac)), len(learner.train)))
    paths = learner.lm.generate([e.prompt for e in local], run.round.max_new_tokens, batch_size=run.runtime.eval_batch_size)
    return local_pairs(local, paths, [is_correct(p, e.answer) for p, e in zip(paths, local)])


# ------------------------------------------------------------------------------------ client side
@client_handler(Candidates)
def on_candidates(client: Client, msg: Candidates) -> PairOffer:
    run, lada, lm = client.run, client.run.lada, client.lm
    bs = run.runtime.eval_batch_size
    start = time.perf_counter()
    logp, ntok = lm.sequence_logprobs(msg.prompts, msg.paths, batch_size=bs)
    logp, ntok = _np(logp), _np(ntok)
    learner_nll = -logp / np.maximum(ntok, 1)
    embedder = QuestionEmbedder(lm, [e.prompt for e in client.train[:OWN_DATA_SAMPLE]], lada.embedding_dim, run.seed, client.name)
    emb, affinity = embedder(msg.prompts)
    phi = feature_matrix(learner_nll, msg.teacher_nll, [len(p) for p in msg.paths], msg.correct, affinity, emb)
    t_features = time.perf_counter() - start

    own_domain = np.array([d in client.domains for d in msg.domains] if msg.domains else [False] * len(msg.prompts), dtype=bool)
    aux = {"learner_nll": learner_nll}
    if lada.filter == "oracle":  # the bound reads labels: own domain, teacher right, learner wrong
        teacher_ok = np.array(msg.correct, dtype=bool)
        eligible = np.flatnonzero(own_domain & teacher_ok)
        guesses = lm.generate([msg.prompts[i] for i in eligible], run.round.max_new_tokens, batch_size=bs)
        wrong = np.zeros(len(phi), dtype=bool)
        wrong[eligible] = [not is_correct(g, msg.answers[i]) for g, i in zip(guesses, eligible)]
        aux.update(own_domain=own_domain, teacher_correct=teacher_ok, learner_wrong=wrong)
    start = time.perf_counter()
    selector = _selector(run, client.state, "filter_down", client.name)
    sel = selector.select(phi, lada.budget, aux=aux)
    client.state["filter_down"] = selector.state_dict()  # select changes state (scaler, rng) too
    t_select = time.perf_counter() - start
    chosen = [int(i) for i in sel.indices]

    # With an up offer the learner writes greedy paths on every candidate anyway; reuse them when its
    # rejected-side paths are greedy too instead of generating the chosen ones twice.
    all_paths = lm.generate(msg.prompts, run.round.max_new_tokens, batch_size=bs) if msg.offer_up else None
    if all_paths is not None and lada.student_temperature == 0:
        own = [all_paths[i] for i in chosen]
    else:
        own = lm.generate([msg.prompts[i] for i in chosen], run.round.max_new_tokens, temperature=lada.student_temperature,
                          batch_size=bs, seed=derive_seed(run.seed, client.name, "student-paths", msg.round))
    own_ok = [is_correct(p, msg.answers[i]) for p, i in zip(own, chosen)]
    pairs = build_pairs([
        PathRecord(msg.sample_ids[i], msg.prompts[i], msg.paths[i], msg.correct[i], p, ok)
        for i, p, ok in zip(chosen, own, own_ok)
    ])
    mine = own_pairs(client, len(pairs), msg.round)
    client.state["pending"] = {
        "round": msg.round,
        "sample_ids": [msg.sample_ids[i] for i in chosen],
        "prompts": [msg.prompts[i] for i in chosen],
        "paths": [msg.paths[i] for i in chosen],
        "has_target": np.array([msg.correct[i] for i in chosen], dtype=np.float64),
        "learner_correct": np.array(own_ok, dtype=np.float64),
        "features": phi[chosen], "f1": sel.f1, "f2": sel.f2, "score": sel.score,
        "nll_before": learner_nll[chosen],
        "own_domain": own_domain[chosen].astype(np.float64),
        "pairs": [[p.prompt, p.chosen, p.rejected] for p in pairs],
        "local_pairs": [[p.prompt, p.chosen, p.rejected] for p in mine],
    }
    with_ref = [p for p in pairs if p.rejected is not None] if lada.ref == "teacher" else []
    reply = PairOffer(
        [p.prompt for p in with_ref], [p.chosen for p in with_ref], [p.rejected for p in with_ref],
        values={"seconds/features": t_features, "seconds/filter": t_select,
                "lada/learner_correct": float(np.mean(own_ok)) if own_ok else 0.0,
                "lada/own_share": float(own_domain[chosen].mean()) if chosen else 0.0,
                "lada/own_base_rate": float(own_domain.mean())},
    )
    if all_paths is not None:
        paths = all_paths
        good = [i for i, p in enumerate(paths) if is_correct(p, msg.answers[i])]
        own_logp, own_ntok = lm.sequence_logprobs([msg.prompts[i] for i in good], [paths[i] for i in good], batch_size=bs)
        reply.up_ids = [msg.sample_ids[i] for i in good]
        reply.up_paths = [paths[i] for i in good]
        reply.up_own_logp, reply.up_own_ntok = _np(own_logp).tolist(), [int(x) for x in _np(own_ntok)]
        reply.up_other_logp = [float(logp[i]) for i in good]
        reply.up_other_ntok = [int(ntok[i]) for i in good]
    return reply


@client_handler(DardUpdate)
def on_dard_update(client: Client, msg: DardUpdate) -> SelectionReport:
    run, lada, lm = client.run, client.run.lada, client.lm
    pending = client.state.pop("pending")
    pairs = [tuple(p) for p in pending["pairs"]]
    seed = derive_seed(run.seed, client.name, "transfer", msg.round)
    has_target = pending["has_target"].astype(bool)
    start = time.perf_counter()
    heldout = [e.prompt for e in client.heldout], [e.solution for e in client.heldout]
    if lada.reward == "heldout":
        if not client.heldout:
            raise ValueError("lada.reward=heldout needs data.client_heldout > 0")
        # A step against g_i changes the held-out loss by -lr * g_i . G_H: a positive cosine helps.
        heldout_grad = lm.loss_gradient(*heldout)
        cosines = np.zeros(len(has_target))
        rows = np.flatnonzero(has_target)
        cosines[rows] = lm.gradient_cosines([pending["prompts"][i] for i in rows], [pending["paths"][i] for i in rows],
                                            heldout_grad)
    heldout_before = float(np.mean(_nll(lm, *heldout, run.runtime.eval_batch_size))) if client.heldout else float("nan")
    t_reward = time.perf_counter() - start
    if lada.loss == "sft":
        stats = client.mixed_sft(msg.round, [p[0] for p in pairs], [p[1] for p in pairs], "lada")
    else:
        ref = None
        if lada.ref == "teacher":  # server refs for pairs with a rejected path, in order; own refs for local pairs
            it = iter(zip(msg.ref_chosen, msg.ref_chosen_ntok, msg.ref_rejected, msg.ref_rejected_ntok))
            ref = [next(it) if p[2] is not None else None for p in pairs]
        transfer = client.pcfg.transfer(run.round)
        with client.ui.task(f"{client.name}: round {msg.round} dard", transfer.steps) as advance:
            stats = train_dard(lm, pairs, ref, [tuple(p) for p in pending["local_pairs"]], transfer, lada,
                               seed=seed, progress=advance)
    start = time.perf_counter()
    heldout_after = float(np.mean(_nll(lm, *heldout, run.runtime.eval_batch_size))) if client.heldout else float("nan")
    if lada.reward == "heldout":
        rewards = heldout_alignment_reward(cosines, has_target)
    else:
        nll_after = _nll(lm, pending["prompts"], pending["paths"], run.runtime.eval_batch_size)
        rewards = learnability_reward(pending["nll_before"], nll_after, has_target)
    t_reward += time.perf_counter() - start
    start = time.perf_counter()
    selector = _selector(run, client.state, "filter_down", client.name)
    selector.update(pending["features"], rewards)
    client.state["filter_down"] = selector.state_dict()
    t_update = time.perf_counter() - start
    values = {**stats, "seconds/filter_update": t_update, "seconds/reward": t_reward,
              "lada/reward": float(rewards.mean()) if len(rewards) else 0.0, "lada/selected": float(len(rewards)),
              "lada/heldout_nll_before": heldout_before, "lada/heldout_nll_after": heldout_after}
    arrays = {k: np.asarray(pending[k], dtype=np.float64)
              for k in ("features", "f1", "f2", "score", "has_target", "learner_correct", "own_domain")}
    arrays["reward"] = rewards
    return SelectionReport(values, pending["sample_ids"], arrays)


# ------------------------------------------------------------------------------------ server side
class Lada:
    """Server-side half of the plug-in: offers candidates, scores references, runs the up direction."""

    def __init__(self, cfg: RunConfig, up: bool):
        self.cfg, self.up = cfg, up
        self.state: dict = {}  # up filters, one per client
        self.domains: dict[str, str] = {}  # public sample id -> domain, for the selection log

    def exchange(self, ctx: RoundContext) -> None:
        server, lada, bs = ctx.server, self.cfg.lada, self.cfg.runtime.eval_batch_size
        pool = server.candidate_pool(ctx.round)
        offer, stats = server.teacher_paths(ctx.round, pool)
        ctx.record("server", stats)
        n = self.cfg.round.paths_per_question
        cand = Candidates(ctx.round, offer.sample_ids, offer.prompts, [e.answer for e in pool for _ in range(n)],
                          offer.paths, offer.correct, _nll(server.lm, offer.prompts, offer.paths, bs).tolist(), self.up,
                          [e.domain for e in pool for _ in range(n)])
        offers = [ctx.call(i, cand) for i in range(ctx.num_clients)]
        self.domains = {e.id: e.domain for e in pool}
        for i, po in enumerate(offers):
            ref = ([], [], [], [])
            if po.prompts:
                c_lp, c_n = server.lm.sequence_logprobs(po.prompts, po.chosen, batch_size=bs)
                r_lp, r_n = server.lm.sequence_logprobs(po.prompts, po.rejected, batch_size=bs)
                ref = (_np(c_lp).tolist(), [int(x) for x in _np(c_n)], _np(r_lp).tolist(), [int(x) for x in _np(r_n)])
            report = ctx.call(i, DardUpdate(ctx.round, *ref))
            self._log(ctx, ctx.channel.clients[i].name, "down", report.sample_ids, report.arrays)
        if self.up:
            self._learn_up(ctx, cand, offers)

    def _learn_up(self, ctx: RoundContext, cand: Candidates, offers: list[PairOffer]) -> None:
        server, lada, bs, seed = ctx.server, self.cfg.lada, self.cfg.runtime.eval_batch_size, self.cfg.seed
        index = {sid: j for j, sid in enumerate(cand.sample_ids)}
        embedder = QuestionEmbedder(server.lm, [e.prompt for e in server.train[:OWN_DATA_SAMPLE]], lada.embedding_dim, seed, "server")
        pairs, refs, chosen_by_client = [], [], []
        t_filter = 0.0
        for k, po in enumerate(offers):
            if not po.up_ids:
                chosen_by_client.append(None)
                continue
            js = [index[s] for s in po.up_ids]
            prompts = [cand.prompts[j] for j in js]
            learner_nll = _nll(server.lm, prompts, po.up_paths, bs)
            own_nll = -np.array(po.up_own_logp) / np.maximum(po.up_own_ntok, 1)
            novelty = [not cand.correct[j] for j in js]
            emb, affinity = embedder(prompts)
            phi = feature_matrix(learner_nll, own_nll, [len(p) for p in po.up_paths], novelty, affinity, emb)
            start = time.perf_counter()
            selector = _selector(self.cfg, self.state, f"filter_up_{k}", f"server-up-{k}")
            sel = selector.select(phi, lada.up_budget, aux={"learner_nll": learner_nll})
            self.state[f"filter_up_{k}"] = selector.state_dict()
            t_filter += time.perf_counter() - start
            picked = [int(i) for i in sel.indices]
            for i in picked:
                j = js[i]
                wrong = not cand.correct[j]
                pairs.append((prompts[i], po.up_paths[i], cand.paths[j] if wrong else None))
                refs.append((po.up_own_logp[i], po.up_own_ntok[i], po.up_other_logp[i], po.up_other_ntok[i]) if wrong else None)
            chosen_by_client.append((po, prompts, phi, learner_nll, sel, picked))
        if not pairs:
            return
        transfer = server.pcfg.transfer(self.cfg.round)
        if lada.loss == "sft":
            stats = server.mixed_sft(ctx.round, [p[0] for p in pairs], [p[1] for p in pairs], "lada")
        else:
            mine = [(p.prompt, p.chosen, p.rejected) for p in own_pairs(server, len(pairs), ctx.round)]
            with ctx.ui.task(f"server: round {ctx.round} dard", transfer.steps) as advance:
                stats = train_dard(server.lm, pairs, refs if lada.ref == "teacher" else None, mine, transfer, lada,
                                   seed=derive_seed(seed, "server", "transfer", ctx.round), progress=advance)
        rewards_all = []
        for k, entry in enumerate(chosen_by_client):
            if entry is None:
                continue
            po, prompts, phi, nll_before, sel, picked = entry
            after = _nll(server.lm, [prompts[i] for i in picked], [po.up_paths[i] for i in picked], bs)
            rewards = learnability_reward(nll_before[picked], after, np.ones(len(picked), dtype=bool))
            start = time.perf_counter()
            selector = _selector(self.cfg, self.state, f"filter_up_{k}", f"server-up-{k}")
            selector.update(phi[picked], rewards)
            self.state[f"filter_up_{k}"] = selector.state_dict()
            t_filter += time.perf_counter() - start
            rewards_all.extend(rewards)
            self._log(ctx, ctx.channel.clients[k].name, "up", [po.up_ids[i] for i in picked], {
                "features": phi[picked], "f1": sel.f1, "f2": sel.f2, "score": sel.score, "reward": rewards,
                "has_target": np.ones(len(picked)),
                "learner_correct": np.array([float(cand.correct[index[po.up_ids[i]]]) for i in picked]),
            })
        ctx.record("server", {**stats, "seconds/filter": t_filter, "lada/reward_up": float(np.mean(rewards_all))})

    def _log(self, ctx: RoundContext, client: str, direction: str, ids: list[str], arrays: dict) -> None:
        for j, sid in enumerate(ids):
            ctx.selections.append({
                "round": ctx.round, "client": client, "direction": direction, "sample_id": sid,
                "domain": self.domains[sid],
                "features": [round(float(x), 5) for x in arrays["features"][j]],
                **{k: (None if np.isnan(arrays[k][j]) else round(float(arrays[k][j]), 5)) for k in ("f1", "f2", "score")},
                "reward": round(float(arrays["reward"][j]), 5),
                "teacher_correct": bool(arrays["has_target"][j]), "learner_correct": bool(arrays["learner_correct"][j]),
                **({"own_domain": bool(arrays["own_domain"][j])} if "own_domain" in arrays else {}),
            })

    def save_state(self, path) -> None:
        save_tree(path, self.state)

    def load_state(self, path) -> None:
        self.state = load_tree(path) or {}


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
