"""Semantic versions: parsing, printing and ordering."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.versions import InvalidVersion, Version

parts = st.integers(0, 10**9 - 1)
versions = st.builds(Version, parts, parts, parts)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3", Version(1, 2, 3)),
        ("v1.2.3", Version(1, 2, 3)),
        ("V2", Version(2, 0, 0)),
        ("1.2", Version(1, 2, 0)),
        (" 0.0.1 ", Version(0, 0, 1)),
        ("10.20.30", Version(10, 20, 30)),
        ("999999999.0.0", Version(999_999_999, 0, 0)),
    ],
)
def test_parse_accepts(text: str, expected: Version) -> None:
    assert Version.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "v",
        "1.2.3.4",
        "01.2.3",
        "1.02.3",
        "1.x",
        "-1.0.0",
        "1..2",
        "1.2.3-rc1",
        "1.2.3+build",
        "1 .2.3",
        "1\u0662",  # a non-ASCII digit
        "\u0661.2.3",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(InvalidVersion, match="is not a semantic version"):
        Version.parse(text)


def test_parts_too_large_are_refused_with_a_clear_message() -> None:
    with pytest.raises(InvalidVersion, match="too large"):
        Version.parse("1000000000.0.0")
    # thousands of digits: refused by length, before int() would choke on them
    with pytest.raises(InvalidVersion, match="too large"):
        Version.parse("1" * 5000)
    with pytest.raises(InvalidVersion, match="out of range"):
        Version(-1, 0, 0)
    with pytest.raises(InvalidVersion, match="out of range"):
        Version(0, 10**9, 0)


def test_printing_and_derived_forms() -> None:
    v = Version.parse("v1.20.3")
    assert str(v) == "1.20.3"
    assert v.dashed == "1-20-3"
    assert v.feature == (1, 20)


def test_ordering_is_numeric_not_textual() -> None:
    ordered = [Version.parse(t) for t in ("0.0.9", "0.1.0", "1.9.9", "1.10.0", "2.0.0", "10.0.0")]
    assert sorted(reversed(ordered)) == ordered
    assert Version(1, 10, 0) > Version(1, 9, 9)
    assert Version(1, 2, 3) <= Version(1, 2, 3)
    assert max(ordered) == Version(10, 0, 0)


def test_equal_versions_hash_equally() -> None:
    assert {Version(1, 2, 3), Version.parse("v1.2.3")} == {Version(1, 2, 3)}
    plain: object = (1, 2, 3)
    assert Version(1, 2, 3) != plain


def test_comparing_with_something_else_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        _ = Version(1, 0, 0) < "1.0.0"


@given(versions)
def test_round_trip_through_text(v: Version) -> None:
    assert Version.parse(str(v)) == v
    assert Version.parse("v" + str(v)) == v


@given(versions, versions)
def test_order_matches_numeric_tuples(a: Version, b: Version) -> None:
    ta, tb = (a.major, a.minor, a.patch), (b.major, b.minor, b.patch)
    assert (a < b) == (ta < tb)
    assert (a <= b) == (ta <= tb)
    assert (a > b) == (ta > tb)
    assert (a == b) == (ta == tb)
    # exactly one of <, ==, > holds
    assert [a < b, a == b, a > b].count(True) == 1


@given(versions, versions)
def test_order_survives_printing(a: Version, b: Version) -> None:
    assert (Version.parse(str(a)) < Version.parse(str(b))) == (a < b)
