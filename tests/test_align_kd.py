"""FedMKT's cross-tokenizer machinery (edit distance, vocabulary mapping, DTW, selection) and the KD loss."""

import itertools
import math
import random

import numpy as np
import pytest
import torch

from fedlada.config import ModelConfig
from fedlada.distill import align
from fedlada.distill.align import (Sparse, dtw_align, edit_distance, first_aligned, nearest_ids, project, select_targets,
                                   vocab_key, vocab_map)
from fedlada.distill.kd import kd_losses
from fedlada.hosts.fedmkt import knowledge, receive
from fedlada.models import load_model


def test_edit_distance_reference_values():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert edit_distance("flaw", "lawn") == 2
    assert edit_distance("same", "same") == 0


def test_nearest_ids_exact_then_nearest_then_lowest_id():
    vocab = ["a", "b", "ab", "<eos>", "ab"]
    got = nearest_ids(["ab", "abc", "x", "<eo>", "b"], vocab)
    # exact (first occurrence), one insertion away, "a" and "b" both at 1 (the lower id), nearest, exact
    assert got.tolist() == [2, 2, 0, 3, 1]


def _levenshtein(a, b):
    """Textbook dynamic programme: the reference the library is checked against."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def test_nearest_ids_matches_a_brute_force_minimum_with_lowest_id_ties(monkeypatch):
    rng = random.Random(3)
    words = lambda n: ["".join(rng.choice("ab c") for _ in range(rng.randint(0, 4))) for _ in range(n)]
    vocab, tokens = words(40), words(60)  # short words over 4 letters: many ties and duplicates
    monkeypatch.setattr(align, "_CHUNK_BYTES", 4 * len(vocab) * 7)  # 7 rows per chunk: several chunks
    want = [min(range(len(vocab)), key=lambda j: (_levenshtein(t, vocab[j]), j)) for t in tokens]
    assert nearest_ids(tokens, vocab, workers=2).tolist() == want
    assert all(edit_distance(t, v) == _levenshtein(t, v) for t in tokens for v in vocab)


def test_vocab_map_is_cached_per_pair_of_vocabularies(tmp_path, monkeypatch):
    sender, receiver = ["the", " cat", "sat", "<eos>"], ["<pad>", "<eos>", "the", " ca", "t"]
    first = vocab_map(sender, receiver, tmp_path)
    assert first.tolist() == [2, 3, 4, 1] and first.dtype == np.int32  # "sat" -> "t": two deletions
    (cached,) = (tmp_path / "vocab-maps").iterdir()
    assert cached.name == f"{vocab_key(sender, receiver)}.npy"
    monkeypatch.setattr(align, "nearest_ids", lambda *a, **k: pytest.fail("a cache hit computes nothing"))
    np.testing.assert_array_equal(vocab_map(sender, receiver, tmp_path), first)
    # any change to either vocabulary, or to which side is which, is another map
    keys = {vocab_key(sender, receiver), vocab_key(sender, receiver[:-1]), vocab_key(sender + ["x"], receiver),
            vocab_key(receiver, sender), vocab_key(["ab", "c"], ["x"]), vocab_key(["a", "bc"], ["x"])}
    assert len(keys) == 6


def test_nearest_ids_needs_a_vocabulary():
    with pytest.raises(ValueError, match="empty"):
        nearest_ids(["a"], [])


def _brute_force_cost(a, b):
    """Minimum DTW cost over all monotone paths (diagonal / down / right steps), by enumeration."""
    best = math.inf

    def walk(i, j, cost):
        nonlocal best
        cost += edit_distance(a[i], b[j])
        if (i, j) == (len(a) - 1, len(b) - 1):
            best = min(best, cost)
            return
        for di, dj in ((1, 1), (1, 0), (0, 1)):
            if i + di < len(a) and j + dj < len(b):
                walk(i + di, j + dj, cost)

    walk(0, 0, 0)
    return best


def test_dtw_unique_optimum_on_hand_made_tokenizations():
    a = ["the", " cat", " dog"]
    b = ["the", " c", "at", " dog"]
    assert dtw_align(a, b) == [(0, 0), (1, 1), (1, 2), (2, 3)]
    assert first_aligned(a, b).tolist() == [0, 1, 1, 2]
    assert dtw_align(["1", "2", "+"], ["1", "2", "+"]) == [(0, 0), (1, 1), (2, 2)]


def test_dtw_path_is_monotone_and_optimal_against_brute_force():
    rng = random.Random(0)
    pieces = ["1", "2", "12", "+", "=", "3", "23", " "]
    for _ in range(40):
        a = rng.choices(pieces, k=rng.randint(1, 5))
        b = rng.choices(pieces, k=rng.randint(1, 5))
        path = dtw_align(a, b)
        assert path[0] == (0, 0) and path[-1] == (len(a) - 1, len(b) - 1)
        for (i, j), (k, m) in itertools.pairwise(path):
            assert (k - i, m - j) in ((1, 1), (1, 0), (0, 1))
        assert sum(edit_distance(a[i], b[j]) for i, j in path) == _brute_force_cost(a, b)


def test_project_moves_distributions_onto_receiver_tokens_and_vocabulary():
    # sender (char-like) sees "1","2","<eos>"; receiver (chunk-like) sees "12","<eos>".
    sender_tokens = ["1", "2", "<eos>"]
    topk = np.array([[0, 1], [1, 0], [2, 0]])  # indices into the sender's token table ["1", "2", "<eos>"]
    logp = np.log(np.array([[0.6, 0.2], [0.5, 0.5], [0.9, 0.1]]))
    to_receiver = np.array([10, 11, 99])  # "1" -> 10, "2" -> 11, "<eos>" -> 99
    out = project(sender_tokens, topk, logp, ["12", "<eos>"], to_receiver)
    assert out.ids.tolist() == [[10, 11], [99, 10]]  # receiver's first token takes sender position 0
    np.testing.assert_allclose(out.probs, [[0.75, 0.25], [0.9, 0.1]])


def _dense(s: Sparse, vocab: int) -> np.ndarray:
    out = np.zeros((s.ids.shape[0], vocab))
    for t in range(s.ids.shape[0]):
        np.add.at(out[t], s.ids[t], s.probs[t])
    return out


def test_greater_picks_lowest_ce_and_weighted_mean_mixes_by_exp_minus_ce():
    p = Sparse(np.array([[0, 1]]), np.array([[0.8, 0.2]]))
    q = Sparse(np.array([[1, 2]]), np.array([[0.5, 0.5]]))
    assert select_targets([p, q], [1.2, 0.7], "greater") is q
    assert select_targets([p, q], [0.1, 0.7], "greater") is p
    mixed = select_targets([p, q], [0.0, math.log(3)], "weighted_mean")  # weights 3/4 and 1/4
    np.testing.assert_allclose(_dense(mixed, 3), [[0.6, 0.15 + 0.125, 0.125]])
    assert _dense(mixed, 3).sum() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        select_targets([p], [0.0], "best")


def test_kd_losses_reference_values():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])  # p = [1/4, 3/4], [1/2, 1/2]
    labels = torch.tensor([1, 0])
    ids = torch.tensor([[0, 1], [0, 1]])
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    lm, kd = kd_losses(logits, labels, ids, probs, torch.tensor([True, True]))
    assert lm.item() == pytest.approx((-math.log(0.75) - math.log(0.5)) / 2)
    assert kd.item() == pytest.approx((-(0.5 * math.log(0.25) + 0.5 * math.log(0.75)) - math.log(0.5)) / 2)
    # a one-hot target on the label is the LM loss; rows without a target do not count
    _, kd_onehot = kd_losses(logits, labels, labels[:, None], torch.ones(2, 1), torch.tensor([True, True]))
    assert kd_onehot.item() == pytest.approx(lm.item())
    _, kd_first = kd_losses(logits, labels, ids, probs, torch.tensor([True, False]))
    assert kd_first.item() == pytest.approx(-(0.5 * math.log(0.25) + 0.5 * math.log(0.75)))


PROMPTS = ["Compute 12+34.", "Compute 5*7."]
SOLUTIONS = ["2+4=6\n1+3=4\n#### 46", "5*7=35\n#### 35"]


def test_knowledge_sent_to_the_same_tokenizer_comes_back_unchanged():
    lm = load_model(ModelConfig(name="tiny-llama-xs"), seed=1)
    msg, own, ce = knowledge(lm, 1, PROMPTS, SOLUTIONS, k=8, batch_size=8)
    back = receive(msg, lm, SOLUTIONS)
    for mine, theirs in zip(own, back):
        np.testing.assert_array_equal(mine.ids, theirs.ids)
        np.testing.assert_allclose(mine.probs, theirs.probs, rtol=1e-5)
    logp, ntok = lm.sequence_logprobs(PROMPTS, SOLUTIONS)
    np.testing.assert_allclose(ce, (-logp / ntok).numpy(), rtol=1e-5)


def test_knowledge_crosses_tokenizers():
    char = load_model(ModelConfig(name="tiny-llama-xs"), seed=1)
    chunk = load_model(ModelConfig(name="tiny-gpt2-s"), seed=1)
    msg, _, _ = knowledge(char, 1, PROMPTS, SOLUTIONS, k=8, batch_size=8)
    got = receive(msg, chunk, SOLUTIONS)
    for sol, s in zip(SOLUTIONS, got):
        n = len(chunk.token_ids([sol])[0]) + 1  # the receiver's tokens + eos
        assert s.ids.shape == s.probs.shape == (n, 8)
        assert s.ids.min() >= 0 and s.ids.max() < chunk.model.config.vocab_size
        np.testing.assert_allclose(s.probs.sum(1), 1.0, rtol=1e-6)
