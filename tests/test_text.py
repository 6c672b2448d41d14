"""Text shown to people: control characters escaped, times in ms or s, distances without a
sign that rounding alone put there."""

import pytest

from lookalike.text import distance, printable, seconds


@pytest.mark.parametrize("d, digits, shown", [
    (-1e-8, 4, "0.0000"),       # a near copy's cosine distance, a rounding below zero
    (-0.0, 4, "0.0000"),
    (-0.00004, 4, "0.0000"),
    (-0.00006, 4, "-0.0001"),   # a real negative (inner product) keeps its sign
    (-12.5, 3, "-12.500"),
    (0.0, 3, "0.000"),
    (0.1234567, 4, "0.1235"),
    (2.0, 4, "2.0000"),
])
def test_distance(d, digits, shown):
    assert distance(d, digits) == shown


def test_printable_and_seconds():
    assert printable("a\nb\x1b[2J") == "a\\nb\\x1b[2J" and printable("plain é") == "plain é"
    assert seconds(0.0123) == "12.3 ms" and seconds(1.234) == "1.23 s"
