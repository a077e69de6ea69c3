"""Filter features phi(x) (DESIGN 3.1): cheap, per candidate, known before selection.

Column layout (both directions; the learner is the side that would train on the sample):

0 learner_nll   per-token NLL of the offered path under the learner
1 teacher_nll   per-token NLL of the offered path under the side that wrote it
2 gap           learner_nll - teacher_nll: the learnability gap
3 log_len       log(1 + characters of the offered path)
4 flag          down: the offered path is correct; up: novelty (the LLM got x wrong)
5 affinity      cosine of the question's embedding to the centroid of the learner's own data
6.. embedding   the learner's mean-pooled last hidden state of the question, randomly projected

Affinity is what makes the selection domain adaptive: FINDINGS measured that domain first, then
the learner's errors, moved a client by up to 60 points.
"""

from __future__ import annotations

import numpy as np
import torch

from fedlada.seeding import derive_seed

NAMES = ("learner_nll", "teacher_nll", "gap", "log_len", "flag", "affinity")


def n_features(embedding_dim: int) -> int:
    return len(NAMES) + embedding_dim


def mean_hidden(lm, texts: list[str], batch_size: int = 256) -> np.ndarray:
    """Mean-pooled last hidden state of `[bos] + tokens(text)` under the model, one row per text."""
    rows = []
    ids_all = [[lm.bos_id, *ids] for ids in lm._token_ids(texts)]
    with torch.inference_mode():
        for start in range(0, len(ids_all), batch_size):
            chunk = ids_all[start : start + batch_size]
            width = max(map(len, chunk))
            ids = torch.full((len(chunk), width), lm.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, seq in enumerate(chunk):
                ids[r, : len(seq)] = torch.tensor(seq)
                mask[r, : len(seq)] = 1
            position_ids = (mask.cumsum(1) - 1).clamp(min=0)
            with lm._autocast():
                out = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                               position_ids=position_ids.to(lm.device), output_hidden_states=True)
            h = out.hidden_states[-1].float()
            m = mask.to(lm.device).unsqueeze(-1).float()
            rows.append(((h * m).sum(1) / m.sum(1)).cpu().numpy())
    return np.concatenate(rows) if rows else np.zeros((0, 0))


class QuestionEmbedder:
    """The learner's view of questions: projection to `dim` dims and affinity to its own data."""

    def __init__(self, lm, own_prompts: list[str], dim: int, seed: int, name: str):
        self.lm = lm
        centroid = mean_hidden(lm, own_prompts).mean(0)
        self.centroid = centroid / (np.linalg.norm(centroid) + 1e-8)
        rng = np.random.default_rng(derive_seed(seed, name, "projection"))
        self.projection = rng.standard_normal((len(centroid), dim)) / np.sqrt(dim)

    def __call__(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        h = mean_hidden(self.lm, prompts)
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
