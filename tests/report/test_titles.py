"""Titles of picture tiles: long file names are wrapped so neighbouring titles do not overlap."""

from lookalike.report.grids import wrapped


def test_wrapped_breaks_long_names_at_separators():
    text = "mirror_bright+text of hubble_deep_field_q3.png"
    out = wrapped(text, width=28)
    assert all(len(line) <= 28 for line in out.split("\n"))
    assert out.replace("\n", "").replace(" ", "") == text.replace(" ", "")
    assert out.split("\n")[1].startswith("hubble_")          # broken at a separator, not inside a word


def test_wrapped_cuts_a_part_longer_than_a_line_and_keeps_short_text():
    assert wrapped("a" * 70, width=28).split("\n") == ["a" * 28, "a" * 28, "a" * 14]
    assert wrapped("short.png") == "short.png"
    assert wrapped("") == ""


def test_wrapped_escapes_control_characters():
    assert "\n" not in wrapped("evil\nname.png", width=40)
