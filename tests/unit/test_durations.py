from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commands.settings import LifecycleSettings
from domain.durations import DurationError, parse_duration, whole_seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        # the short forms
        ("10s", 10),
        ("1m", 60),
        ("1m30s", 90),
        ("2h", 7200),
        ("1d", 86400),
        ("500ms", 0.5),
        (45, 45),
        ("45", 45),
        (1.5, 1.5),
        # as Nelson (Scala's Duration) writes them
        ("10 seconds", 10),
        ("2 minutes", 120),
        ("1 hour", 3600),
        ("5.minutes", 300),
        ("1.5 hours", 5400),
        ("3 days", 3 * 86400),
        ("1 day", 86400),
        ("2 mins", 120),
        ("30 secs", 30),
        ("250 millis", 0.25),
        ("10 s", 10),
        ("10seconds", 10),
        ("  2   minutes ", 120),
        ("1e3 ms", 1),
    ],
)
def test_both_syntaxes(text: object, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("soon", "not a duration"),
        ("", "empty"),
        ("1m3", "not a duration"),
        ("10 fortnights", "'fortnights' is not a unit of time"),
        ("10 Seconds", "not a unit of time"),
        ("-5 seconds", "not a duration"),
        (-5, "negative"),
        (True, "number of seconds or text"),
        (None, "number of seconds or text"),
        ("Inf", "not a duration"),
        ("1e400 seconds", "ten years"),
    ],
)
def test_bad_durations_say_why(text: object, words: str) -> None:
    with pytest.raises(DurationError) as info:
        parse_duration(text)
    assert words in str(info.value)


def test_whole_seconds_round_up_so_nothing_positive_becomes_zero() -> None:
    assert whole_seconds(parse_duration("500ms")) == 1
    assert whole_seconds(parse_duration("1.5 seconds")) == 2
    assert whole_seconds(parse_duration("2 minutes")) == 120


def test_the_configuration_reads_the_same_syntax() -> None:
    settings = LifecycleSettings.model_validate({"interval": "2 minutes", "notice": "1 day"})
    assert settings.interval == timedelta(minutes=2)
    assert settings.notice == timedelta(days=1)
    with pytest.raises(ValueError, match="not a unit of time"):
        LifecycleSettings.model_validate({"interval": "2 fortnights"})


@given(st.integers(min_value=0, max_value=10_000), st.sampled_from(["s", "m", "h"]))
def test_short_and_long_forms_agree(n: int, unit: str) -> None:
    word = {"s": "seconds", "m": "minutes", "h": "hours"}[unit]
    assert parse_duration(f"{n}{unit}") == parse_duration(f"{n} {word}")
