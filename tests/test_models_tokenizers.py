import random
import string

import pytest
from transformers import AutoTokenizer

from fedlada.models import build_tokenizer

KINDS = ["char", "chunk"]
PRINTABLE = [chr(c) for c in range(32, 127)] + ["\n"]
SAMPLES = [
    "",
    " ",
    "  leading and trailing  ",
    "\nnewlines\n\n in  the middle \n",
    "347+85=",
    "7+5+0=12|4+8+1=13|3+0+1=04|#### 432",
    "13-7-0=6|12-8-1=3|5-2-1=2|#### 236",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.\n"
    "How many clips did Natalia sell altogether in April and May? $1,000.50 <<48/2=24>>\n#### 72",
    "".join(PRINTABLE),
    "####  #### ####",
]


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_is_exact(kind):
    tok = build_tokenizer(kind)
    rng = random.Random(0)
    randoms = ["".join(rng.choice(PRINTABLE) for _ in range(rng.randint(1, 80))) for _ in range(200)]
    for text in SAMPLES + randoms:
        assert tok.decode(_ids(tok, text)) == text


@pytest.mark.parametrize("kind", KINDS)
def test_special_tokens_and_unknown_characters(kind):
    tok = build_tokenizer(kind)
    specials = {tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id}
    assert len(specials) == 4 and None not in specials
    assert _ids(tok, "\t") == [tok.unk_token_id]
    ids = [tok.bos_token_id, *_ids(tok, " a b "), tok.eos_token_id, tok.pad_token_id]
    assert tok.decode(ids, skip_special_tokens=True) == " a b "


def test_the_two_tokenizers_differ():
    char, chunk = build_tokenizer("char"), build_tokenizer("chunk")
    assert len(char) == 100  # 95 printable + newline + 4 specials
    assert len(chunk) == 135
    solution = "7+5+0=12|4+8+1=13|3+0+1=04|#### 432"
    assert [char.convert_ids_to_tokens(i) for i in _ids(char, solution)] == list(solution)
    assert chunk.convert_ids_to_tokens(_ids(chunk, solution)) == [
        "7", "+", "5", "+0=", "1", "2", "|", "4", "+", "8", "+1=", "1", "3", "|",
        "3", "+0", "+1=", "0", "4", "|", "#### ", "4", "3", "2",
    ]
    assert chunk.convert_ids_to_tokens(_ids(chunk, " the cat and")) == [" the", " c", "a", "t", " and"]
    # Different ids for the same characters, and special tokens elsewhere in the vocabulary.
    assert _ids(char, "0123") != _ids(chunk, "0123")
    assert char.pad_token_id == 0 and chunk.pad_token_id == len(chunk) - 4


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_reload_with_auto_tokenizer(kind, tmp_path):
    tok = build_tokenizer(kind)
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    for text in SAMPLES:
        assert _ids(again, text) == _ids(tok, text)
        assert again.decode(_ids(again, text)) == text
    assert (again.bos_token_id, again.eos_token_id, again.pad_token_id) == (
        tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)


def test_unknown_kind():
    with pytest.raises(ValueError, match="char, chunk"):
        build_tokenizer("bytes")


def test_all_printable_characters_are_single_tokens_in_char():
    tok = build_tokenizer("char")
    for ch in string.printable:
        if ch in "\t\r\x0b\x0c":
            continue
        assert len(_ids(tok, ch)) == 1 and _ids(tok, ch) != [tok.unk_token_id]
