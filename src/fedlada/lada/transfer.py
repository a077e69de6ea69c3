"""One LaDa transfer, the same for both directions: features -> select -> pairs -> train -> reward -> update.

The learner is whichever side would train on the offered paths: a client in the down direction
(offered: the server's paths), the server in the up direction (offered: a client's correct paths).
The routine is split in two halves because, in the down direction, the teacher's reference
log-probs have to come back over the wire between choosing the pairs and training on them:

- `choose`: the learner's features phi(x) of every offered sample, its filter's picks, the learner's
  own paths on them (the rejected side of DARD pairs) -> a `Pending` transfer;
- `learn`: DARD (or SFT, the control) on the pending pairs plus own-data pairs;
- `rewards` (with `reward_probe` taken before `learn`): what each pick did for the learner; then the
  filter's `update`.

The paper's terms: phi = features (filter/features.py), F^down/F^up = the `Selector`, DARD = distill/dard.py.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from fedlada.config import RunConfig
from fedlada.data.answers import is_correct
from fedlada.distill import PathRecord, build_pairs, local_pairs
from fedlada.distill.trainer import Ref, TextPair, train_dard
from fedlada.filter import Selection, make_selector
from fedlada.filter.features import NAMES, QuestionEmbedder, feature_matrix, n_features
from fedlada.filter.reward import heldout_alignment_reward, learnability_reward
from fedlada.seeding import derive_seed

OWN_DATA_SAMPLE = 512  # own prompts used for the domain centroid
POOL_SAMPLE = 256  # offered correct paths whose mean gradient is `heldout_contrast`'s reference direction


@dataclass
class Offered:
    """One public sample as the learner sees it before choosing."""

    sample_id: str
    prompt: str
    answer: str
    path: str  # the other side's path
    path_correct: bool
    writer_nll: float  # per-token NLL of the path under the side that wrote it
    flag: bool  # feature column 4: down = the path is correct; up = novel (the learner got it wrong)
    own_domain: bool  # label: read only by the oracle bound and the logs
    learner_path: str | None = None  # the learner's own path where it already has one (up direction)
    learner_correct: bool = False


@dataclass
class Pick:
    """One chosen sample, with what the filter saw when it chose it (needed again for its update)."""

    sample_id: str
    prompt: str
    path: str
    path_correct: bool
    learner_path: str | None
    learner_correct: bool
    own_domain: bool
    features: list[float]
    f1: float
    f2: float
    score: float
    nll_before: float
    answer: str = ""  # the public gold answer (the up reward checks the server's new path against it)


@dataclass
class Pending:
    """A transfer between its two halves; saved in the learner's state, so a fresh process can finish it."""

    round: int
    picks: list[Pick]
    local: list[tuple[str, str, str | None]] = field(default_factory=list)  # own-data pairs
    pool: list[tuple[str, str]] = field(default_factory=list)  # a sample of the offered correct (prompt, path)s

    def pairs(self) -> list[TextPair]:
        """DARD pairs of the picks: teacher right -> (its path, the learner's wrong path or None); teacher
        wrong -> nothing to learn. Keyed by sample id, in pick order."""
        records = [PathRecord(p.sample_id, p.prompt, p.path, p.path_correct, p.learner_path, p.learner_correct)
                   for p in self.picks]
        return [(pair.prompt, pair.chosen, pair.rejected) for pair in build_pairs(records)]

    def pair_ids(self) -> list[str]:
        return [p.sample_id for p in self.picks if p.path_correct]

    def to_tree(self) -> dict:
        return {"round": self.round, "picks": [asdict(p) for p in self.picks], "local": [list(p) for p in self.local],
                "pool": [list(p) for p in self.pool]}

    @classmethod
    def from_tree(cls, tree: dict) -> Pending:
        return cls(int(tree["round"]), [Pick(**p) for p in tree["picks"]], [tuple(p) for p in tree["local"]],
                   [tuple(p) for p in tree.get("pool", [])])


def selector_for(cfg: RunConfig, state: dict | None, who: str, key: str):
    """The filter of one (pair, direction), restored from its saved state when there is one."""
    sel = make_selector(cfg.lada.filter, n_features(cfg.lada.embedding_dim), seed=derive_seed(cfg.seed, who, key),
                        alpha=cfg.lada.alpha, cold_start=cfg.lada.cold_start,
                        net_inputs=len(NAMES) if cfg.lada.net_features == "scalars" else None)
    if state:
        sel.load_state_dict(state)
    return sel


def per_token_nll(lm, prompts: list[str], paths: list[str], batch_size: int) -> np.ndarray:
    logp, ntok = lm.sequence_logprobs(prompts, paths, batch_size=batch_size)
    return -logp.detach().cpu().numpy().astype(np.float64) / np.maximum(ntok.cpu().numpy(), 1)


def features(learner, offered: list[Offered]) -> np.ndarray:
    """phi(x) of every offered sample under the learner as it is now (filter/features.py's columns)."""
    cfg, lm = learner.cfg, learner.lm
    prompts = [o.prompt for o in offered]
    learner_nll = per_token_nll(lm, prompts, [o.path for o in offered], cfg.runtime.eval_batch_size)
    embedder = QuestionEmbedder(lm, [e.prompt for e in learner.train[:OWN_DATA_SAMPLE]], cfg.lada.embedding_dim,
                                cfg.seed, learner.name)
    emb, affinity = embedder(prompts)
    return feature_matrix(learner_nll, [o.writer_nll for o in offered], [len(o.path) for o in offered],
                          [o.flag for o in offered], affinity, emb)


def choose(learner, selector, offered: list[Offered], budget: int, round_: int) -> tuple[Pending, dict[str, float]]:
    """Features of every offered sample, the filter's picks, and the learner's own paths on the picks (the
    rejected side where they are wrong): the ones it brought along (`Offered.learner_path`), else generated."""
    cfg, lada, lm = learner.cfg, learner.cfg.lada, learner.lm
    bs = cfg.runtime.eval_batch_size
    start = time.perf_counter()
    prompts = [o.prompt for o in offered]
    phi = features(learner, offered)
    learner_nll = phi[:, 0]
    t_features = time.perf_counter() - start

    own = np.array([o.own_domain for o in offered], dtype=bool)
    aux = {"learner_nll": learner_nll}
    greedy: dict[int, tuple[str, bool]] = {}  # the oracle's look at the learner's greedy paths
    if lada.filter == "oracle":
        greedy = _greedy_paths(learner, offered, own)
        wrong = np.zeros(len(offered), dtype=bool)
        wrong[list(greedy)] = [not ok for _, ok in greedy.values()]
        aux.update(own_domain=own, teacher_correct=np.array([o.path_correct for o in offered], dtype=bool),
                   learner_wrong=wrong)
    start = time.perf_counter()
    sel: Selection = selector.select(phi, budget, aux=aux)
    t_select = time.perf_counter() - start
    chosen = [int(i) for i in sel.indices]

    own_paths = {i: (offered[i].learner_path, offered[i].learner_correct) for i in chosen
                 if offered[i].learner_path is not None}
    if lada.student_temperature == 0:  # the rejected side is the greedy path: reuse what the oracle generated
        own_paths.update({i: greedy[i] for i in chosen if i in greedy and i not in own_paths})
    missing = [i for i in chosen if i not in own_paths]
    paths = lm.generate([prompts[i] for i in missing], cfg.round.max_new_tokens, temperature=lada.student_temperature,
                        batch_size=bs, seed=derive_seed(cfg.seed, learner.name, "student-paths", round_))
    own_paths.update({i: (p, is_correct(p, offered[i].answer)) for i, p in zip(missing, paths)})
    picks = [
        Pick(offered[i].sample_id, prompts[i], offered[i].path, offered[i].path_correct, *own_paths[i],
             bool(own[i]), phi[i].tolist(), float(f1), float(f2), float(s), float(learner_nll[i]), offered[i].answer)
        for i, f1, f2, s in zip(chosen, sel.f1, sel.f2, sel.score)
    ]
    stats = {"seconds/features": t_features, "seconds/filter": t_select,
             "lada/own_share": float(own[chosen].mean()) if chosen else 0.0, "lada/own_base_rate": float(own.mean()),
             "lada/own_possible": own_possible(own, np.array([o.path_correct for o in offered], dtype=bool), budget),
             "lada/learner_correct": float(np.mean([p.learner_correct for p in picks])) if picks else 0.0}
    pool = []
    if lada.reward == "heldout_contrast":
        correct = [i for i, o in enumerate(offered) if o.path_correct]
        rng = random.Random(derive_seed(cfg.seed, learner.name, "reward-pool", round_))
        pool = [(prompts[i], offered[i].path) for i in sorted(rng.sample(correct, min(POOL_SAMPLE, len(correct))))]
    return Pending(round_, picks, pool=pool), stats


def own_possible(own: np.ndarray, path_correct: np.ndarray, budget: int) -> float:
    """The highest own-domain share of `budget` picks that takes no wrong teacher path: where the teacher is
    weak on the learner's domain (the testbed's condition (d), docs/results.md), fewer own-domain paths are right
    than the budget holds, and this, not the base rate, bounds a filter that serves the learner."""
    k = min(budget, len(own))
    return min(k, int((own & path_correct).sum())) / k if k else 0.0


def _greedy_paths(learner, offered: list[Offered], own: np.ndarray) -> dict[int, tuple[str, bool]]:
    """For the oracle: the learner's greedy path, and whether it is right, on each own-domain candidate with
    a correct teacher path (it puts the learner-wrong ones first)."""
    cfg = learner.cfg
    rows = [i for i, o in enumerate(offered) if own[i] and o.path_correct]
    guesses = learner.lm.generate([offered[i].prompt for i in rows], cfg.round.max_new_tokens,
                                  batch_size=cfg.runtime.eval_batch_size)
    return {i: (g, is_correct(g, offered[i].answer)) for g, i in zip(guesses, rows)}


def own_data_pairs(learner, n_exchanged: int, round_: int) -> list[tuple[str, str, str | None]]:
    """Pairs on the learner's own data, in the same share of the phase as in `distill`
    (`round.transfer_local_fraction`): they keep the learner on its own domain (both directions)."""
    cfg = learner.cfg
    frac = cfg.round.transfer_local_fraction
    rng = random.Random(derive_seed(cfg.seed, learner.name, "local-pairs", round_))
    local = rng.sample(learner.train, min(round(n_exchanged * frac / (1 - frac)), len(learner.train)))
    paths = learner.lm.generate([e.prompt for e in local], cfg.round.max_new_tokens, batch_size=cfg.runtime.eval_batch_size)
    return [(p.prompt, p.chosen, p.rejected)
            for p in local_pairs(local, paths, [is_correct(p, e.answer) for p, e in zip(paths, local)])]


def learn(learner, pairs: list[TextPair], refs: list[Ref | None] | None, local: list[TextPair], round_: int,
          label: str) -> dict[str, float]:
    """The transfer phase: DARD on the pairs (+ own-data pairs), or SFT on their chosen paths (`lada.loss=sft`,
    the control, mixed with own data as in `distill`)."""
    cfg, lada = learner.cfg, learner.cfg.lada
    if lada.loss == "sft":
        return learner.mixed_sft(round_, [p[0] for p in pairs], [p[1] for p in pairs], "lada")
    transfer = learner.participant_cfg.transfer(cfg.round).sized(len(pairs) + len(local))
    with learner.ui.task(f"{label}: round {round_} dard", transfer.steps) as advance:
        return train_dard(learner.lm, pairs, refs if lada.ref == "teacher" else None, local, transfer, lada,
                          seed=derive_seed(cfg.seed, learner.name, "transfer", round_), progress=advance)


@dataclass
class RewardProbe:
    """What a reward needs from the learner as it was before the update."""

    kind: str
    cosines: np.ndarray | None = None  # heldout: each pick's gradient cosine with the held-out loss gradient
    heldout_before: float = float("nan")


def _heldout(learner) -> tuple[list[str], list[str]]:
    return [e.prompt for e in learner.heldout], [e.solution for e in learner.heldout]


def reward_probe(kind: str, learner, pending: Pending) -> RewardProbe:
    """The pick cosines of a held-out reward: with the held-out loss gradient (`heldout`), or with the unit
    held-out gradient minus the unit mean gradient of the offered pool (`heldout_contrast`; filter/reward.py)."""
    if kind == "nll_drop":
        return RewardProbe(kind)
    if not getattr(learner, "heldout", None):
        raise ValueError(f"{learner.name}: lada.reward={kind} needs a held-out slice (data.client_heldout > 0)")
    lm, heldout = learner.lm, _heldout(learner)
    direction = lm.loss_gradient(*heldout)
    if kind == "heldout_contrast" and pending.pool:
        pool = lm.loss_gradient([p for p, _ in pending.pool], [c for _, c in pending.pool])
        direction = direction / direction.norm().clamp(min=1e-12) - pool / pool.norm().clamp(min=1e-12)
    cosines = np.zeros(len(pending.picks))
    rows = [j for j, p in enumerate(pending.picks) if p.path_correct]
    cosines[rows] = lm.gradient_cosines([pending.picks[j].prompt for j in rows], [pending.picks[j].path for j in rows],
                                        direction)
    before = float(per_token_nll(lm, *heldout, learner.cfg.runtime.eval_batch_size).mean())
    return RewardProbe(kind, cosines, before)


def rewards(probe: RewardProbe, learner, pending: Pending) -> tuple[np.ndarray, dict[str, float]]:
    """Per pick, the reward of `probe.kind` (filter/reward.py), and the scalars to log."""
    has_target = np.array([p.path_correct for p in pending.picks], dtype=bool)
    bs = learner.cfg.runtime.eval_batch_size
    if probe.kind != "nll_drop":
        after = float(per_token_nll(learner.lm, *_heldout(learner), bs).mean())
        return heldout_alignment_reward(probe.cosines, has_target), {
            "lada/heldout_nll_before": probe.heldout_before, "lada/heldout_nll_after": after}
    after = per_token_nll(learner.lm, [p.prompt for p in pending.picks], [p.path for p in pending.picks], bs)
    return learnability_reward(np.array([p.nll_before for p in pending.picks]), after, has_target), {}


def update(selector, pending: Pending, reward: np.ndarray) -> None:
    """The filter learns the rewards of its picks (EE-Net: f1 on them, f2 on its residuals)."""
    features = np.array([p.features for p in pending.picks], dtype=np.float64).reshape(len(pending.picks), -1)
    if not pending.picks:
        features = np.zeros((0, selector.n_features))
    selector.update(features, reward)
