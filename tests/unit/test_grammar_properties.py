"""Properties of the grammar: no input makes it raise anything but its own ParseError, errors
stay short and well formed, and the canonical text of any command parses back to it."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commands import model
from commands.grammar import COMMANDS, canonical, normalise, parse_command
from commands.replies import ParseError
from domain.locks import parse_until
from domain.states import StackStatus
from domain.versions import Version


def fast(examples: int) -> settings:
    return settings(
        max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )


COMMAND_WORDS = [w for spec in COMMANDS for w in (spec.name, *spec.aliases)]
KEYWORDS = sorted({k for spec in COMMANDS for clause in spec.clauses for k in clause.keywords})
RESERVED = {
    *COMMAND_WORDS,
    *KEYWORDS,
    *("and", "all", "everywhere", "datacenters", "datacenter", "dcs", "dc"),
    *("manifest", "add", "register"),
}
TOKENS = [
    *COMMAND_WORDS,
    *KEYWORDS,
    *("and", "&amp;", ",", ", ", " ,", "all", "add", "manifest"),
    *("1.2.3", "v1", "1.x", "99999999999", "#12", "#", "12", "\u00b2", "\u0661"),
    *("dc-east", "qa", "dev/sandbox", "svc--1-2-3--abcdefgh", "acme/howdy", "reg/x:1"),
    *("```", "```yaml\n", "\n", "\t", "\r\n", "\u00a0", "\u200b", "\u2014", "\u2013"),
    *('"', "'", "`", "\u201c", "\u201d", "\u2018", "\u2019", ".", "!", "?", "..."),
    *("<@U0BOT1>", "<@U1|bob>", "<#C1|ops>", "<#C1>", "<!here>", "<!subteam^S1|@ops>"),
    *("<https://x.example|label>", "<http://a.example|a.example>", "<mailto:a@b.c|a@b.c>"),
    *("<", ">", "|", "&lt;", "&gt;", "&amp;", "<>", "<|>", "/nelson", "nelson", "@nelson"),
    *("units:\n  - name: a\n", "\x00", "\x1b[31m", "\u2028", "\U0001f680"),
]
tricky = st.characters(
    codec="utf-8",
    categories=("L", "N", "P", "S", "Z", "Cc"),
    include_characters="\n\t\r`\"'<>|&#,.\u00a0\u200b\u2014\u201c\u201d",
)
fragments = st.one_of(st.sampled_from(TOKENS), st.text(tricky, max_size=8))
joiners = st.sampled_from([" ", " ", " ", "", "\n", "\t", ", "])


@st.composite
def sentences(draw: st.DrawFn, start: st.SearchStrategy[str] | None = None) -> str:
    parts = draw(st.lists(fragments, max_size=10))
    if start is not None:
        parts.insert(0, draw(start))
    text = ""
    for part in parts:
        text += draw(joiners) + part
    return text


def parses_or_refuses(text: str) -> model.Command | None:
    try:
        return parse_command(text)
    except ParseError as e:
        assert e.message and len(e.message) < 400, e.message
        assert e.suggestion is None or e.suggestion.startswith("did you mean `")
        assert isinstance(e.usage, str) and isinstance(e.hint, str)
        return None


@fast(400)
@given(st.text())
def test_any_text(text: str) -> None:
    parses_or_refuses(text)


@fast(400)
@given(st.text(tricky, max_size=200))
def test_text_full_of_quotes_markup_and_control_characters(text: str) -> None:
    parses_or_refuses(text)


@fast(600)
@given(sentences())
def test_command_like_text(text: str) -> None:
    parses_or_refuses(text)


@fast(600)
@given(sentences(st.sampled_from(COMMAND_WORDS)))
def test_every_command_with_random_words(text: str) -> None:
    parses_or_refuses(text)


@fast(25)
@given(
    st.sampled_from(["", "lint\n```\n", "deploy ", "reject 1 ", "manifest a/b\n", "<@U1> "]),
    st.text(min_size=1, max_size=40),
    st.integers(1_000, 12_000),
)
def test_huge_inputs(start: str, chunk: str, times: int) -> None:
    parses_or_refuses(start + chunk * times)


@fast(300)
@given(st.text())
def test_normalise_trims_and_unifies_line_breaks(text: str) -> None:
    plain = normalise(text)
    assert plain == plain.strip() and "\r" not in plain


# -- generated commands -------------------------------------------------------------------------

names = st.from_regex(r"[a-z][a-z0-9]{0,6}(-[a-z0-9]{1,4}){0,2}", fullmatch=True).filter(
    lambda n: n not in RESERVED
)
namespaces = st.lists(names, min_size=1, max_size=3).map("/".join)
stacks = names | st.builds(
    "{}--{}--{}".format,
    names,
    st.builds(Version, *[st.integers(0, 9)] * 3).map(lambda v: v.dashed),
    st.from_regex(r"[a-z0-9]{8}", fullmatch=True),
)
versions = st.builds(Version, st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6))
images = st.from_regex(r"[a-z0-9][a-zA-Z0-9./:@_-]{0,30}[a-zA-Z0-9]", fullmatch=True).filter(
    lambda i: i.lower() not in RESERVED
)
repositories = st.from_regex(
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,8}[A-Za-z0-9](/[A-Za-z0-9][A-Za-z0-9._-]{0,8}[A-Za-z0-9])?",
    fullmatch=True,
).filter(lambda r: r.lower() not in RESERVED)
paths = st.from_regex(
    r"[A-Za-z0-9_.-][A-Za-z0-9_./-]{0,12}( [A-Za-z0-9_.-]{1,8})?[A-Za-z0-9]", fullmatch=True
).filter(lambda p: p.lower() not in RESERVED)
# Manifest text as people paste it: any printable text and indentation, but no code fence, no
# Slack markup characters and nothing a phone would have changed.
manifest_chars = st.characters(
    codec="utf-8",
    categories=("L", "N", "P", "S"),
    exclude_characters="`<>&\u2018\u2019\u201a\u201b\u2032\u201c\u201d\u201e\u201f\u2033",
)
manifest_text = st.lists(
    st.text(manifest_chars, max_size=10) | st.sampled_from(["\n", "  ", "\t", " ", ": ", "- "]),
    max_size=30,
).map("".join)
reasons = st.lists(names, max_size=6).map(" ".join)
statuses = st.lists(st.sampled_from(list(StackStatus)), max_size=4, unique=True).map(tuple)


def maybe(values: st.SearchStrategy[str]) -> st.SearchStrategy[str | None]:
    return st.none() | values


deploys = st.one_of(
    st.builds(
        model.Deploy,
        unit=names,
        version=versions,
        datacenters=st.lists(names, max_size=4, unique=True).map(tuple),
        namespace=maybe(namespaces),
        plan=maybe(names),
        image=maybe(images),
    ),
    st.builds(
        model.Deploy,
        unit=names,
        version=versions,
        everywhere=st.just(True),
        namespace=maybe(namespaces),
        plan=maybe(names),
        image=maybe(images),
    ),
)

emergency_deploys = st.builds(
    model.Deploy,
    unit=names,
    version=versions,
    datacenters=st.lists(names, max_size=2, unique=True).map(tuple),
    namespace=maybe(namespaces),
    emergency=st.just(True),
    reason=st.lists(names, min_size=1, max_size=6).map(" ".join),
)
because = st.just("") | st.lists(names, min_size=1, max_size=6).map(" ".join)
untils = st.one_of(
    st.dates(date(2000, 1, 1), date(2999, 12, 31)).map(date.isoformat),
    st.builds("{}:{:02d}".format, st.integers(0, 23), st.integers(0, 59)),
    st.builds(
        "{}T{:02d}:{:02d}".format,
        st.dates(date(2000, 1, 1), date(2999, 12, 31)),
        st.integers(0, 23),
        st.integers(0, 59),
    ),
).map(parse_until)
lock_commands = st.one_of(
    st.builds(
        model.Lock,
        names,
        maybe(namespaces),
        st.none() | st.integers(1, 10**8).map(lambda s: timedelta(seconds=s)),
        because,
    ),
    st.builds(model.Unlock, names, maybe(namespaces)),
    st.builds(model.Freeze, namespaces, untils, maybe(names), because),
    st.builds(model.Unfreeze, namespaces, maybe(names)),
    st.just(model.ListLocks()),
    st.builds(model.Rollback, names, maybe(namespaces), maybe(names), maybe(stacks)),
)

commands: st.SearchStrategy[model.Command] = st.one_of(
    emergency_deploys,
    lock_commands,
    st.builds(model.Help, maybe(st.sampled_from([spec.name for spec in COMMANDS]))),
    deploys,
    st.builds(model.Commit, names, versions, namespaces),
    st.builds(model.ListStacks, maybe(namespaces), maybe(names), statuses, maybe(names)),
    st.builds(model.ListUnits, maybe(namespaces), maybe(names)),
    st.builds(model.ListUnits, maybe(namespaces), maybe(names), st.integers(1, 10**6)),
    st.builds(model.ListUnits, maybe(namespaces), maybe(names), after=names),
    *(st.builds(kind, stacks) for kind in (model.Inspect, model.Logs, model.Runtime)),
    *(st.builds(kind, stacks) for kind in (model.Redeploy, model.Reverse)),
    st.builds(model.Deprecate, names, versions),
    st.builds(model.Approve, st.integers(0, 10**12)),
    st.builds(model.Reject, st.integers(0, 10**12), reasons),
    st.builds(model.Graph, names),
    st.sampled_from(
        [
            model.ListApprovals(),
            model.ListDatacenters(),
            model.CleanupPolicies(),
            model.ListManifests(),
            model.Whoami(),
            model.Lint(attachment=True),
        ]
    ),
    st.builds(model.Lint, path=paths),
    st.builds(model.Lint, text=manifest_text),
    st.builds(model.RegisterManifest, repositories, attachment=st.just(True)),
    st.builds(model.RegisterManifest, repositories, path=paths),
    st.builds(model.RegisterManifest, repositories, text=manifest_text),
    st.builds(model.Announce, names, versions, images),
    st.builds(
        model.CreateToken,
        names,
        st.lists(namespaces, min_size=1, max_size=3, unique=True).map(tuple),
        st.sampled_from(["deploy", "view"]),
    ),
    st.builds(model.RevokeToken, names),
    st.just(model.ListTokens()),
)


@fast(400)
@given(commands)
def test_canonical_text_parses_back(command: model.Command) -> None:
    assert parse_command(canonical(command)) == command


@st.composite
def deploy_texts(draw: st.DrawFn) -> tuple[str, model.Deploy]:
    """A deploy as people type it: clauses in any order, any list separators, synonyms, odd
    spacing, any keyword case, a prefix and a final full stop."""
    cmd = draw(deploys)
    spaces = st.sampled_from([" ", "  ", "\t", "\n", " \u00a0", "\u00a0"])
    case = st.sampled_from([str.lower, str.upper, str.title])
    clauses: list[list[str]] = []
    if cmd.everywhere:
        clauses.append(
            draw(
                st.sampled_from(
                    [
                        ["everywhere"],
                        ["to", "all"],
                        ["to", "everywhere"],
                        ["on", "all", "datacenters"],
                    ]
                )
            )
        )
    elif cmd.datacenters:
        keyword = draw(st.sampled_from(["to", "on", "at"]))
        listed = cmd.datacenters[0]
        for dc in cmd.datacenters[1:]:
            listed += draw(st.sampled_from([",", ", ", " , ", " and ", " & ", ", and "])) + dc
        clauses.append([keyword, *listed.split(" ")])
    if cmd.namespace:
        clauses.append(["in", cmd.namespace])
    if cmd.plan:
        clauses.append(["plan", cmd.plan])
    if cmd.image:
        clauses.append(["image", cmd.image])
    clauses = draw(st.permutations(clauses))
    words = [
        draw(case)("deploy"),
        cmd.unit,
        draw(st.sampled_from([str(cmd.version), f"v{cmd.version}"])),
    ]
    for clause in clauses:
        words.append(draw(case)(clause[0]))
        words.extend(clause[1:])
    text = draw(st.sampled_from(["", "/nelson ", "<@U0BOT1> ", "nelson, ", "\n "]))
    for i, word in enumerate(words):
        text += (draw(spaces) if i else "") + word
    text += draw(st.sampled_from(["", ".", "!", " ", "\n"]))
    return text, cmd


@fast(300)
@given(deploy_texts())
def test_deploys_as_people_type_them(case: tuple[str, model.Deploy]) -> None:
    text, expected = case
    assert parse_command(text) == expected


@fast(100)
@given(deploys.filter(lambda d: d.image is None))
def test_keywords_and_names_ignore_case(cmd: model.Deploy) -> None:
    assert parse_command(canonical(cmd).upper()) == cmd
    assert parse_command(canonical(cmd).title()) == cmd


pasted = st.builds(
    "{}\n{}{}".format,
    st.text(manifest_chars, min_size=1, max_size=20),
    manifest_text,
    st.text(manifest_chars, min_size=1, max_size=5),
)


@fast(300)
@given(
    st.sampled_from(["lint", "lint manifest", "manifest acme/howdy", "register acme/howdy"]),
    pasted,
)
def test_pasted_manifest_on_the_next_lines_is_kept_exactly(command: str, text: str) -> None:
    parsed = parse_command(f"{command}\n{text}")
    assert isinstance(parsed, model.Lint | model.RegisterManifest)
    assert parsed.text == text
