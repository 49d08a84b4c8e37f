"""No input makes the parser raise anything but its own ParseError."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from commands import model
from commands.grammar import COMMANDS, parse_command
from commands.replies import ParseError
from domain.versions import Version

WORDS = [w for spec in COMMANDS for w in (spec.name, *spec.aliases)] + [
    "to",
    "in",
    "at",
    "on",
    "plan",
    "image",
    "everywhere",
    "status",
    "unit",
    "manifest",
    "add",
    "ready",
    "1.2.3",
    "v1",
    "#12",
    ",",
    "and",
    "all",
    "```",
    "\n",
    "<@U1>",
    "<#C1|x>",
    "&amp;",
    "\u201c",
    "\u2019",
    '"',
    "'",
    "/nelson",
    "dc-east",
    "svc--1-2-3--abcdefgh",
]
fragments = st.one_of(st.sampled_from(WORDS), st.text(max_size=12))
sentences = st.lists(fragments, max_size=12).map(" ".join)


def parses_or_refuses(text: str) -> None:
    try:
        result = parse_command(text)
    except ParseError:
        return
    assert result is not None


@settings(max_examples=600, deadline=None)
@given(st.text(max_size=300))
def test_any_text(text: str) -> None:
    parses_or_refuses(text)


@settings(max_examples=800, deadline=None)
@given(sentences)
def test_command_like_text(text: str) -> None:
    parses_or_refuses(text)


@settings(max_examples=30, deadline=None)
@given(st.text(min_size=1, max_size=50).map(lambda s: s * 2000))
def test_huge_inputs(text: str) -> None:
    parses_or_refuses(text)


names = st.from_regex(r"[a-z][a-z0-9]{0,6}(-[a-z0-9]{1,4}){0,2}", fullmatch=True)
versions = st.builds(Version, st.integers(0, 99), st.integers(0, 99), st.integers(0, 99))
deploys = st.builds(
    model.Deploy,
    unit=names,
    version=versions,
    datacenters=st.lists(
        names.filter(lambda n: n not in ("and", "all", "everywhere")), max_size=3, unique=True
    ).map(tuple),
    namespace=st.none() | names,
    plan=st.none() | names,
)


def render(cmd: model.Deploy) -> str:
    text = f"deploy {cmd.unit} {cmd.version}"
    if cmd.datacenters:
        text += " to " + ", ".join(cmd.datacenters)
    if cmd.namespace:
        text += f" in {cmd.namespace}"
    if cmd.plan:
        text += f" plan {cmd.plan}"
    return text


@settings(max_examples=300, deadline=None)
@given(deploys)
def test_deploy_round_trip(cmd: model.Deploy) -> None:
    assert parse_command(render(cmd)) == cmd
