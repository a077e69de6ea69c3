"""Pair construction rules of DESIGN 3.4 on hand-made records."""

import pytest

from fedlada.data.types import Example
from fedlada.distill import Pair, PathRecord, build_pairs, contrast_view, local_pairs


def rec(i, teacher, t_ok, learner, l_ok):
    return PathRecord(f"s{i}", f"q{i}", teacher, t_ok, learner, l_ok)


def test_build_pairs_rules():
    records = [
        rec(0, "T0", True, "L0", False),  # teacher right, learner wrong -> contrastive pair
        rec(1, "T1", True, "L1", True),  # both right -> SFT only
        rec(2, "T2", False, "L2", True),  # teacher wrong -> dropped
        rec(3, "T3", False, "L3", False),  # both wrong -> dropped
        rec(4, "T4", True, None, False),  # learner path missing -> SFT only
        rec(5, None, False, "L5", False),  # no teacher path -> dropped
    ]
    assert build_pairs(records) == [
        Pair("s0", "q0", "T0", "L0"),
        Pair("s1", "q1", "T1", None),
        Pair("s4", "q4", "T4", None),
    ]


def test_up_direction_is_the_same_rules_with_roles_swapped():
    # client (now teacher) right, server (now learner) wrong
    assert build_pairs([rec(0, "client path", True, "server path", False)]) == [
        Pair("s0", "q0", "client path", "server path")
    ]


def test_correct_flag_without_path_is_rejected():
    with pytest.raises(ValueError):
        rec(0, None, True, "L", False)
    with pytest.raises(ValueError):
        rec(0, "T", True, None, True)


def test_local_pairs():
    examples = [Example(f"d{i}", f"p{i}", f"gold{i}", str(i), "add") for i in range(3)]
    pairs = local_pairs(examples, ["wrong0", "right1", None], [False, True, False])
    assert pairs == [
        Pair("d0", "p0", "gold0", "wrong0"),
        Pair("d1", "p1", "gold1", None),
        Pair("d2", "p2", "gold2", None),
    ]
    with pytest.raises(ValueError):
        local_pairs(examples, ["x"], [False])


def test_contrast_view_gives_the_shared_steps_and_scores_the_rest():
    chosen, rejected = "1+2=3\n3*4=12\n#### 12", "1+2=3\n3*4=11\n#### 11"
    assert contrast_view(chosen, rejected, "divergence") == ("1+2=3\n", "3*4=12\n#### 12", "3*4=11\n#### 11")
    # a shared start inside the first step is no shared step: whole paths
    assert contrast_view("1+2=3\n#### 3", "1+2=4\n#### 4", "divergence") == ("", "1+2=3\n#### 3", "1+2=4\n#### 4")
    assert contrast_view(chosen, rejected, "path") == ("", chosen, rejected)
    with pytest.raises(ValueError, match="contrast"):
        contrast_view(chosen, rejected, "prefix")
