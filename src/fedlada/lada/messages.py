"""LaDa's messages: lists of records keyed by public sample id.

Down direction (server -> client k), per round:

1. `Candidates`: the m public candidates, each with the server's path, its verification, the
   server's per-token NLL of it and the sample's public domain label (read only by the oracle bound
   and the logs).
2. `PairOffer` (reply): the client's picks, the DARD pairs that need the teacher's reference log-probs,
   and, where the host trains the server, the client's correct paths on the candidates the server got
   wrong (the up offer).
3. `References`: the server's log-probs of those pairs (the DARD reference).
4. `SelectionReport` (reply): per pick, what the filter saw and the reward it got.

Everything here is public: questions of the public set, paths generated on them, scalars.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedlada.federation.messages import Message


@dataclass
class Candidate:
    sample_id: str
    prompt: str
    answer: str  # the public gold answer
    path: str  # the server's path
    correct: bool  # the server's path verified against the answer
    teacher_nll: float  # per-token NLL of the path under the server
    domain: str  # public label: read only by filter=oracle and the own-domain logs


@dataclass
class RefRequest:
    """A DARD pair whose reference log-probs the server computes with its own model: of `chosen` and
    `rejected` after `given`, the steps both paths share (`lada.contrast=divergence`; else empty)."""

    sample_id: str
    prompt: str
    chosen: str
    rejected: str
    given: str = ""


@dataclass
class Reference:
    sample_id: str
    chosen_logp: float
    chosen_tokens: int
    rejected_logp: float
    rejected_tokens: int


@dataclass
class UpOffer:
    """A client's correct path on a public candidate, offered to the server with the client's own scalars."""

    sample_id: str
    path: str
    own_logp: float  # client's log-prob of its path (the reference where the server learns it)
    own_tokens: int
    other_logp: float  # client's log-prob of the server's path on the same question
    other_tokens: int


@dataclass
class PickReport:
    """One pick of a filter, for selections.jsonl."""

    sample_id: str
    features: list[float]
    f1: float  # NaN for selectors without EE-Net's nets
    f2: float
    score: float
    reward: float
    teacher_correct: bool
    learner_correct: bool
    own_domain: bool


@dataclass
class Candidates(Message):
    round: int
    candidates: list[Candidate]
    offer_up: bool


@dataclass
class PairOffer(Message):
    picks: list[str]  # the sample ids the client's filter chose (the host's exchange runs on them)
    needs_reference: list[RefRequest]
    up: list[UpOffer] = field(default_factory=list)
    values: dict[str, float] = field(default_factory=dict)


@dataclass
class References(Message):
    round: int
    references: list[Reference]


@dataclass
class SelectionReport(Message):
    picks: list[PickReport]
    values: dict[str, float] = field(default_factory=dict)


MESSAGES = (Candidates, PairOffer, References, SelectionReport)
