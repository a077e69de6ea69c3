"""Filter features phi(x) (LaDa paper, arXiv 2602.18749): cheap, per candidate, known before selection.

Column layout (both directions; the learner is the side that would train on the sample):

0 learner_nll   per-token NLL of the offered path under the learner
1 teacher_nll   per-token NLL of the offered path under the side that wrote it
2 gap           learner_nll - teacher_nll: the learnability gap
3 log_len       log(1 + characters of the offered path)
4 flag          down: the offered path is correct; up: novelty (the LLM got x wrong)
5 affinity      cosine of the question's embedding to the centroid of the learner's own data
6.. embedding   the learner's mean-pooled last hidden state of the question, randomly projected

Affinity is what makes the selection domain adaptive: on the `standard` testbed, picking the client's
own domain (the oracle) beats random picks by 23 points (docs/results.md).
"""

from __future__ import annotations

import numpy as np

from fedlada.seeding import derive_seed

NAMES = ("learner_nll", "teacher_nll", "gap", "log_len", "flag", "affinity")


def n_features(embedding_dim: int) -> int:
    return len(NAMES) + embedding_dim


class QuestionEmbedder:
    """The learner's view of questions: projection to `dim` dims and affinity to its own data."""

    def __init__(self, lm, own_prompts: list[str], dim: int, seed: int, name: str):
        self.lm = lm
        centroid = lm.mean_hidden(own_prompts).mean(0)
        self.centroid = centroid / (np.linalg.norm(centroid) + 1e-8)
        rng = np.random.default_rng(derive_seed(seed, name, "projection"))
        self.projection = rng.standard_normal((len(centroid), dim)) / np.sqrt(max(dim, 1))

    def __call__(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        h = self.lm.mean_hidden(prompts)
        affinity = (h @ self.centroid) / (np.linalg.norm(h, axis=1) + 1e-8)
        return h @ self.projection, affinity


def feature_matrix(learner_nll, teacher_nll, path_chars, flag, affinity, embedding) -> np.ndarray:
    learner_nll = np.asarray(learner_nll, dtype=np.float64)
    teacher_nll = np.asarray(teacher_nll, dtype=np.float64)
    cols = [
        learner_nll, teacher_nll, learner_nll - teacher_nll,
        np.log1p(np.asarray(path_chars, dtype=np.float64)),
        np.asarray(flag, dtype=np.float64), np.asarray(affinity, dtype=np.float64),
    ]
    return np.column_stack([*cols, np.asarray(embedding, dtype=np.float64)])
