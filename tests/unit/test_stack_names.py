"""Stack names: building, parsing and the hash suffix."""

from __future__ import annotations

import random
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.stack_names import (
    InvalidStackName,
    StackName,
    is_stack_name,
    new_hash,
    parse_stack_name,
    stack_name,
)
from domain.versions import Version

units = st.from_regex(r"[a-z]([a-z0-9]|-[a-z0-9]){0,30}", fullmatch=True)
versions = st.builds(
    Version, st.integers(0, 10**9 - 1), st.integers(0, 10**9 - 1), st.integers(0, 10**9 - 1)
)
hashes = st.text(string.ascii_lowercase + string.digits, min_size=8, max_size=8)


def test_the_documented_example() -> None:
    name = stack_name("howdy-http", Version(1, 2, 3), "k3x9q0ab")
    assert name == "howdy-http--1-2-3--k3x9q0ab"
    assert parse_stack_name(name) == StackName("howdy-http", Version(1, 2, 3), "k3x9q0ab")
    assert str(parse_stack_name(name)) == name
    assert is_stack_name(name)


def test_single_letter_units_and_zero_versions() -> None:
    parsed = parse_stack_name("a--0-0-0--00000000")
    assert (parsed.unit, parsed.version, parsed.hash) == ("a", Version(0, 0, 0), "00000000")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("howdy-http-1.2.3", "expected a unit, a version and a hash separated by '--'"),
        ("howdy--http--1-2-3--k3x9q0ab", "the unit 'howdy--http' contains '--'"),
        ("--1-2-3--k3x9q0ab", "the unit name is missing"),
        ("Howdy--1-2-3--k3x9q0ab", "the unit 'Howdy' must start with a lowercase letter"),
        ("1howdy--1-2-3--k3x9q0ab", "the unit '1howdy' must start with a lowercase letter"),
        ("howdy---1-2-3--k3x9q0ab", "'-1-2-3' is not a version written MAJOR-MINOR-PATCH"),
        ("howdy--1-2--k3x9q0ab", "'1-2' is not a version written MAJOR-MINOR-PATCH"),
        ("howdy--01-2-3--k3x9q0ab", "'01-2-3' is not a version"),
        ("howdy--1.2.3--k3x9q0ab", "'1.2.3' is not a version"),
        ("howdy--1-2-3--k3x9q0a", "the hash 'k3x9q0a' must be 8 lowercase letters or digits"),
        ("howdy--1-2-3--K3X9Q0AB", "the hash 'K3X9Q0AB' must be 8"),
        ("howdy--1-2-3--k3x9q0abc", "the hash 'k3x9q0abc' must be 8"),
        ("howdy--1000000000-0-0--k3x9q0ab", "the version '1000000000-0-0' has a part that is"),
        ("howdy--999999999-0-" + "9" * 5000 + "--k3x9q0ab", "has a part that is too large"),
        ("", "expected a unit"),
    ],
)
def test_bad_names_are_explained(text: str, problem: str) -> None:
    with pytest.raises(InvalidStackName) as caught:
        parse_stack_name(text)
    message = str(caught.value)
    assert message.startswith(f"'{text}' is not a stack name: ")
    assert problem in message
    assert message.endswith("stack names look like howdy-http--1-2-3--k3x9q0ab")
    assert not is_stack_name(text)


def test_a_trailing_hyphen_in_the_unit_is_refused() -> None:
    with pytest.raises(InvalidStackName, match="not ending in a hyphen"):
        stack_name("howdy-", Version(1, 0, 0), "abcdefgh")


def test_building_refuses_what_could_not_be_parsed_back() -> None:
    with pytest.raises(InvalidStackName, match="the unit 'a--b'"):
        stack_name("a--b", Version(1, 0, 0), "abcdefgh")
    with pytest.raises(InvalidStackName, match="the hash 'short'"):
        stack_name("a", Version(1, 0, 0), "short")
    with pytest.raises(InvalidStackName):
        StackName("UPPER", Version(1, 0, 0), "abcdefgh")


def test_new_hash_alphabet_and_length() -> None:
    for _ in range(200):
        h = new_hash()
        assert len(h) == 8
        assert set(h) <= set(string.ascii_lowercase + string.digits)


def test_new_hash_is_repeatable_with_a_seeded_rng_and_varies_without() -> None:
    assert new_hash(random.Random(42)) == new_hash(random.Random(42))
    rng = random.Random(42)
    assert new_hash(rng) != new_hash(rng)
    assert len({new_hash() for _ in range(1000)}) == 1000


@given(units, versions, hashes)
def test_round_trip(unit: str, version: Version, hash8: str) -> None:
    name = stack_name(unit, version, hash8)
    assert is_stack_name(name)
    assert parse_stack_name(name) == StackName(unit, version, hash8)
    assert str(parse_stack_name(name)) == name


@given(st.text(max_size=40))
def test_parsing_arbitrary_text_either_round_trips_or_explains(text: str) -> None:
    try:
        parsed = parse_stack_name(text)
    except InvalidStackName as exc:
        assert "stack names look like" in str(exc)
    else:
        assert str(parsed) == text
