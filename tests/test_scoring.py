"""The scoring rule (niah.scoring.judge) over the cases of issue #11 and each value kind."""

import pytest

from niah.scoring import FAIL, NULL, PASS, judge, score, value_kind

N, U, W = "1234567", "3f2b8a1c-9d4e-4b7a-8c6d-0e1f2a3b4c5d", "amber badger"

CASES = [
    # numbers: whole numbers only
    (" 12345678.", N, FAIL),
    ("0123456789", "3456789", FAIL),
    ("91234567", N, FAIL),
    ("12345670", N, FAIL),
    ("The passkey is 1234567.", N, PASS),
    ("1234567", N, PASS),
    ("1,234,567", N, PASS),
    ("1 234 567.", N, PASS),
    ("It is 1234567 (7 digits).", N, PASS),  # a short count is not an offered value
    ("1234567 1234567", N, PASS),  # the same value twice
    ("\uff11\uff12\uff13\uff14\uff15\uff16\uff17", N, PASS),  # full-width digits (NFKC)
    ("\u0661\u0662\u0663\u0664\u0665\u0666\u0667", N, PASS),  # Arabic-Indic digits
    # hedges offering another value of the needle's kind
    ("7654321 or maybe 1234567", N, FAIL),
    ("1234567, or perhaps 1234568", N, FAIL),
    ("1234567 or 123456", N, FAIL),
    # thinking
    ("1234567 </think> done", N, PASS),
    ("<think>maybe 7654321</think> It is 1234567.", N, PASS),
    ("Perhaps 7654321? </think> The passkey is 1234567", N, PASS),
    ("<think>the passkey is 1234567", N, NULL),  # truncated reasoning, no answer outside it
    ("It is 7654321 <think>or 1234567", N, FAIL),
    ("<THINK>7654321</THINK>1234567", N, PASS),
    # empty and punctuation
    ("", N, NULL),
    ("   \n\t", N, NULL),
    ("<think>1234567</think>", N, NULL),
    ("...", N, FAIL),
    ("?!", N, FAIL),
    ("I do not know.", N, FAIL),
    # uuid
    (U, U, PASS),
    (U.upper(), U, PASS),
    (f"The code is {U}.", U, PASS),
    (U[:-1], U, FAIL),
    (U + "a", U, FAIL),
    ("a" + U, U, FAIL),
    (f"{U} or 00000000-0000-4000-8000-000000000000", U, FAIL),
    # word pairs
    ("amber badger", W, PASS),
    ("Amber  Badger!", W, PASS),
    ("The words are: amber badger.", W, PASS),
    ("amber badgers", W, FAIL),
    ("lamber badger", W, FAIL),
    ("amber badger or jolly yak", W, FAIL),
    ("badger amber", W, FAIL),
]


@pytest.mark.parametrize("response,value,verdict", CASES, ids=[repr(c[0]) for c in CASES])
def test_verdicts(response, value, verdict):
    assert score(response, value) == verdict
    j = judge(response, value)
    assert j.verdict == verdict and j.score == (1.0 if verdict == PASS else 0.0)


def test_value_kinds():
    assert [value_kind(v) for v in (N, U, W, "blue note")] == ["number", "uuid", "words", "text"]


def test_other_values_match_as_whole_words():
    assert score("The answer is blue note.", "blue note") == PASS
    assert score("The answer is blue notes.", "blue note") == FAIL


@pytest.mark.parametrize(
    "response,found,score_,verdict",
    [
        ("1111111, 2222222 and 3333333", (True, True, True), 1.0, PASS),
        ("3333333 2222222 1111111", (True, True, True), 1.0, PASS),
        ("1111111 and 3333333", (True, False, True), 2 / 3, FAIL),
        ("1111111", (True, False, False), 1 / 3, FAIL),
        ("1111111 2222222 3333333 4444444", (True, True, True), 3 / 4, FAIL),  # an extra value
        ("nothing", (False, False, False), 0.0, FAIL),
        ("", (False, False, False), 0.0, NULL),
    ],
)
def test_several_values(response, found, score_, verdict):
    j = judge(response, ["1111111", "2222222", "3333333"])
    assert (j.found, j.verdict) == (found, verdict)
    assert j.score == pytest.approx(score_)
