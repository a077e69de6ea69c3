import pytest

from fedlada.data.answers import answers_match, extract_answer, is_correct, parse_number, strip_calculator


@pytest.mark.parametrize(
    "text, expected",
    [
        ("So she pays 1234 in all.\n#### 1,234", "1234"),
        ("The temperature fell to -5", "-5"),
        ("It costs 3.50", "3.50"),
        ("Each ticket is $12.", "12"),
        ("6 + 36 = 42 apples. The answer is 42.", "42"),
        ("#### -7\nNote: 99 other numbers 3 follow", "-7"),
        ("no number here", None),
        ("", None),
        (r"so the ratio is \boxed{\frac{1}{2}} overall 7", "1/2"),
        (r"we keep \frac{3}{4} of it", "3/4"),
        ("ratio 3/4.", "3/4"),
        ("48-57=-9", "-9"),
        ("10-5", "5"),  # a binary minus is not a sign
        ("(2+3)-5", "5"),
        ("n-5", "5"),
        ("total: 1,234,567.89!", "1234567.89"),
        ("#### 18 dollars.", "18"),
        ("#### 50%", "50"),
        ("#### x^2+1", "x^2+1"),
        ("#### 3x+2", "3x+2"),
        (r"#### 2 \sqrt{3}", r"2 \sqrt{3}"),
        ("#### 432|7+5+0=12", "432"),  # the model kept generating after its answer
        ("#### 5, because 2+3", "5"),
        ("7+5+0=12|4+8+1=13|3+0+1=04|#### 432", "432"),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("3.50", "3.5"),
        ("1/2", "0.5"),
        ("1,000", "1000"),
        ("1000.0", "1,000"),
        ("$12", "12"),
        (r"\frac{1}{2}", "0.5"),
        ("0.333333", "1/3"),  # a rounded repeating decimal
        ("-5", "-5.0"),
    ],
)
def test_numbers_that_match(pred, gold):
    assert answers_match(pred, gold)


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("1000001", "1000000"),  # no relative tolerance on large numbers
        ("3.51", "3.5"),
        ("0.33", "1/3"),
        ("5", "-5"),
        (None, "1"),
        ("12/0", "5"),
        ("abc", "7"),
        ("2^3", "8"),  # a numeric gold answer needs a number, not an expression
    ],
)
def test_numbers_that_do_not_match(pred, gold):
    assert not answers_match(pred, gold)


def test_symbolic_answers_use_math_verify():
    assert answers_match("2^{1/2}", r"\sqrt{2}")
    assert answers_match("1+x^2", "x^2+1")
    assert not answers_match("x^2+2", "x^2+1")
    assert answers_match(r"\frac{\pi}{2}", r"\frac{\pi}{2}")


def test_answers_match_never_raises_on_garbage():
    assert answers_match("}{\\frac{", "\\sqrt{") is False
    assert answers_match("[[(", "x^") is False
    assert answers_match("1", "") is False


def test_is_correct():
    assert is_correct(r"Half of it: \boxed{\frac{1}{2}}", "0.5")
    assert is_correct("Janet earns 1,234 dollars.\n#### 1,234", "1234")
    assert is_correct("#### -7\nThen 99 more.", "-7")
    assert not is_correct("#### -7\nThen 99 more.", "99")
    assert is_correct("The answer is 42.", "42.0")
    assert not is_correct("no idea", "42")


def test_parse_number_is_exact():
    from fractions import Fraction

    assert parse_number("1,234.50") == Fraction(246900, 200)
    assert parse_number(r"\frac{3}{4}") == Fraction(3, 4)
    assert parse_number("x+1") is None


def test_strip_calculator():
    text = "She has 48/2 = <<48/2=24>>24 clips, then 48+24 = <<48+24=72>>72.\n#### 72"
    assert strip_calculator(text) == "She has 48/2 = 24 clips, then 48+24 = 72.\n#### 72"
