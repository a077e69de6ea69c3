"""The project's own tokenizers for the from-scratch `tiny-*` models.

Two deliberately different tokenizers make the default scenario heterogeneous: models that do not share
a vocabulary can only exchange text and sequence log-probabilities, which is what LaDa's DARD loss relies
on (distill/dard.py). `char` has one token per character; `chunk` orders its vocabulary differently (special
tokens last, so nothing may assume `pad == 0`) and adds multi-character tokens for pieces that are
frequent in worked solutions and English text. Digits stay single characters in both, because digit
pairs would hide the column-by-column structure the small models have to learn.

Both are byte-exact on printable ASCII and newline: no normalizer, no pre-tokenizer, a `Fuse` decoder,
and no clean-up of spaces. Other characters become `<unk>`; sources should be ASCII.
"""

from __future__ import annotations

import string

from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>"}
TOKENIZER_KINDS = ("char", "chunk")

_CHARS = [chr(c) for c in range(32, 127)] + ["\n"]

# BPE merges in priority order; each merged piece must be built from pieces that exist before it.
_CHUNK_MERGES = [
    ("#", "#"), ("##", "##"), ("####", " "),
    ("+", "0"), ("+0", "="), ("+", "1"), ("+1", "="),
    ("-", "0"), ("-0", "="), ("-", "1"), ("-1", "="),
    (" ", "t"), ("h", "e"), (" t", "he"), (" ", "a"), ("n", "d"), (" a", "nd"), (" ", "o"), (" o", "f"),
    (" ", "s"), (" ", "w"), (" ", "h"), (" ", "c"), (" ", "$"), ("i", "n"), ("e", "r"), ("a", "n"),
    ("o", "n"), ("r", "e"), ("e", "d"), ("i", "s"), ("o", "u"), (".", " "), (",", " "), (".", "\n"),
]


def _chunk_chars() -> list[str]:
    order = string.digits + string.punctuation + string.ascii_letters + " \n"
    assert sorted(order) == sorted(_CHARS)
    return list(order)


def build_tokenizer(kind: str) -> PreTrainedTokenizerFast:
    """A fresh `char` or `chunk` tokenizer (save it with `save_pretrained`, reload with `AutoTokenizer`)."""
    specials = list(SPECIAL_TOKENS.values())
    if kind == "char":
        pieces, merges = specials + _CHARS, []
    elif kind == "chunk":
        pieces = _chunk_chars() + [a + b for a, b in _CHUNK_MERGES] + specials
        merges = _CHUNK_MERGES
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(TOKENIZER_KINDS)}")
    vocab = {piece: i for i, piece in enumerate(pieces)}
    assert len(vocab) == len(pieces), "duplicate vocabulary piece"
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False, **SPECIAL_TOKENS)
