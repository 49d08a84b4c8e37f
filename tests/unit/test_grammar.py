from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from commands import model
from commands.grammar import (
    COMMANDS,
    CommandSpec,
    canonical,
    find_spec,
    help_for,
    help_overview,
    normalise,
    parse_command,
    suggest,
)
from commands.help import render_reference
from commands.replies import ParseError
from domain.states import StackStatus
from domain.versions import Version

V = Version.parse
S = StackStatus
DOCS = Path(__file__).resolve().parents[2] / "docs" / "commands.md"
STACK = "svc--1-2-3--k3x9q0ab"


def Deploy(
    datacenters: tuple[str, ...] = (),
    *,
    unit: str = "svc",
    version: str = "1.2.0",
    everywhere: bool = False,
    namespace: str | None = None,
    plan: str | None = None,
    image: str | None = None,
) -> model.Deploy:
    return model.Deploy(unit, V(version), datacenters, everywhere, namespace, plan, image)


PARSES: list[tuple[str, model.Command]] = [
    # deploy: versions, datacenter lists, clauses in any order
    ("deploy svc v1.2 to dc-east", Deploy(("dc-east",))),
    ("deploy svc 1.2.0", Deploy()),
    ("deploy svc 1.2", Deploy()),
    ("deploy svc V1.2.0", Deploy()),
    ("deploy svc 3", Deploy(version="3.0.0")),
    ("Deploy svc 1.2.0 to dc-east, dc-west in qa", Deploy(("dc-east", "dc-west"), namespace="qa")),
    ("DEPLOY SVC 1.2.0 TO DC-EAST", Deploy(("dc-east",))),
    ("deploy svc 1.2.0 to dc-east,dc-west", Deploy(("dc-east", "dc-west"))),
    ("deploy svc 1.2.0 to dc-east , dc-west", Deploy(("dc-east", "dc-west"))),
    ("deploy svc 1.2.0 to dc-east ,dc-west", Deploy(("dc-east", "dc-west"))),
    ("deploy svc 1.2.0 to dc-a and dc-b", Deploy(("dc-a", "dc-b"))),
    ("deploy svc 1.2.0 to dc-a & dc-b", Deploy(("dc-a", "dc-b"))),
    ("deploy svc 1.2.0 to dc-a, dc-b, and dc-c", Deploy(("dc-a", "dc-b", "dc-c"))),
    ("deploy svc 1.2.0 to dc-a, dc-a", Deploy(("dc-a",))),
    ("deploy svc 1.2.0 on dc-east", Deploy(("dc-east",))),
    ("deploy svc 1.2.0 at dc-east", Deploy(("dc-east",))),
    ("deploy svc 1.2.0 everywhere", Deploy(everywhere=True)),
    ("deploy svc 1.2.0 to everywhere", Deploy(everywhere=True)),
    ("deploy svc 1.2.0 to all", Deploy(everywhere=True)),
    ("deploy svc 1.2.0 to all datacenters", Deploy(everywhere=True)),
    ("deploy svc 1.2.0 everywhere in qa", Deploy(everywhere=True, namespace="qa")),
    (
        "deploy svc 1.2.0 plan big in dev/sandbox to dc-east",
        Deploy(("dc-east",), namespace="dev/sandbox", plan="big"),
    ),
    (
        "deploy svc 1.2.0 in qa plan big to dc-a, dc-b image reg.example.com/svc:1.2.0",
        Deploy(("dc-a", "dc-b"), namespace="qa", plan="big", image="reg.example.com/svc:1.2.0"),
    ),
    (
        "deploy svc 2 image reg.example.com/svc@sha256:abc",
        Deploy(version="2.0.0", image="reg.example.com/svc@sha256:abc"),
    ),
    (
        "deploy svc 1.2.0 image Registry.example.com/Team/svc:RC1",
        Deploy(image="Registry.example.com/Team/svc:RC1"),
    ),
    ("   deploy\tsvc   1.2.0   on  dc-east  ", Deploy(("dc-east",))),
    ("deploy\nsvc\n1.2.0\nto dc-east", Deploy(("dc-east",))),
    ("deploy svc 1.2.0 to dc-east.", Deploy(("dc-east",))),
    ("deploy svc 1.2.0 to dc-east!", Deploy(("dc-east",))),
    ("deploy svc 1.2.", Deploy()),
    # commit
    ("commit svc 1.2.3 to qa", model.Commit("svc", V("1.2.3"), "qa")),
    ("commit svc v2 into dev/sandbox", model.Commit("svc", V("2.0.0"), "dev/sandbox")),
    ("Commit SVC 1.2.3 TO QA", model.Commit("svc", V("1.2.3"), "qa")),
    # stacks and units
    ("stacks", model.ListStacks()),
    ("stacks in qa at dc-east", model.ListStacks("qa", "dc-east")),
    ("stacks at dc-east in qa", model.ListStacks("qa", "dc-east")),
    ("stacks on dc-east", model.ListStacks(datacenter="dc-east")),
    ("stacks in dev/sandbox", model.ListStacks(namespace="dev/sandbox")),
    ("stacks unit svc", model.ListStacks(unit="svc")),
    ("stacks for svc", model.ListStacks(unit="svc")),
    ("stacks status ready", model.ListStacks(statuses=(S.READY,))),
    ("stacks status ready,failed", model.ListStacks(statuses=(S.READY, S.FAILED))),
    ("stacks status ready, failed", model.ListStacks(statuses=(S.READY, S.FAILED))),
    ("stacks status ready and failed", model.ListStacks(statuses=(S.READY, S.FAILED))),
    ("stacks statuses READY, Failed", model.ListStacks(statuses=(S.READY, S.FAILED))),
    ("stacks status ready, ready", model.ListStacks(statuses=(S.READY,))),
    ("stacks failed", model.ListStacks(statuses=(S.FAILED,))),
    ("stacks failed, warming in qa", model.ListStacks("qa", statuses=(S.FAILED, S.WARMING))),
    (
        "stacks status warming on dc-west unit svc in prod",
        model.ListStacks("prod", "dc-west", (S.WARMING,), "svc"),
    ),
    ("units", model.ListUnits()),
    ("units in prod at dc-west", model.ListUnits("prod", "dc-west")),
    ("units on dc-west", model.ListUnits(datacenter="dc-west")),
    ("units page 3 in qa", model.ListUnits("qa", page=3)),
    ("units after howdy-http at dc-east", model.ListUnits(None, "dc-east", after="howdy-http")),
    # one stack
    (f"inspect {STACK}", model.Inspect(STACK)),
    ("inspect 4f2a9c1b7e", model.Inspect("4f2a9c1b7e")),
    (f"inspect {STACK.upper()}", model.Inspect(STACK)),
    (f"logs {STACK}", model.Logs(STACK)),
    (f"runtime {STACK}", model.Runtime(STACK)),
    (f"redeploy {STACK}", model.Redeploy(STACK)),
    (f"reverse {STACK}", model.Reverse(STACK)),
    (f"pause {STACK}", model.Pause(STACK)),
    (f"resume {STACK}", model.Resume(STACK)),
    ("traffic", model.Traffic()),
    ("traffic howdy-http", model.Traffic("howdy-http")),
    ("traffic in prod", model.Traffic(namespace="prod")),
    ("traffic howdy-http at dc-east in qa", model.Traffic("howdy-http", "qa", "dc-east")),
    ("deprecate svc 1.4", model.Deprecate("svc", V("1.4.0"))),
    ("graph accounts", model.Graph("accounts")),
    # approvals
    ("approvals", model.ListApprovals()),
    ("approve 12", model.Approve(12)),
    ("approve #12", model.Approve(12)),
    ("approve #12.", model.Approve(12)),
    ("reject 3", model.Reject(3)),
    ("reject #3 error rate too high", model.Reject(3, "error rate too high")),
    ("reject 3 error rate too high.", model.Reject(3, "error rate too high.")),
    ("reject 3   5xx   went up\nby 4%", model.Reject(3, "5xx went up by 4%")),
    ('reject 3 "too slow"', model.Reject(3, "too slow")),
    ("reject 3 it's \u201cnot ready\u201d", model.Reject(3, 'it\'s "not ready"')),
    # about the bot
    ("datacenters", model.ListDatacenters()),
    ("dcs", model.ListDatacenters()),
    ("cleanup-policies", model.CleanupPolicies()),
    ("policies", model.CleanupPolicies()),
    ("whoami", model.Whoami()),
    ("WhoAmI?", model.Whoami()),
    ("help", model.Help()),
    ("help deploy", model.Help("deploy")),
    ("help DEPLOY", model.Help("deploy")),
    ("help dcs", model.Help("datacenters")),
    ("help ?", model.Help()),
    ("help deploy?", model.Help("deploy")),
    ("?", model.Help()),
    ("? stacks", model.Help("stacks")),
    ("commands", model.Help()),
    ("help?", model.Help()),
    # lint: a path, inline text, or an attachment
    ("lint manifest examples/a.yml", model.Lint(path="examples/a.yml")),
    ("lint examples/a.yml", model.Lint(path="examples/a.yml")),
    ("lint Examples/A.yml", model.Lint(path="Examples/A.yml")),
    ('lint "my manifests/a.yml"', model.Lint(path="my manifests/a.yml")),
    ("lint", model.Lint(attachment=True)),
    ("lint manifest", model.Lint(attachment=True)),
    ("lint units: []", model.Lint(text="units: []")),
    # manifests
    (
        "manifest acme/howdy examples/h.yml",
        model.RegisterManifest("acme/howdy", path="examples/h.yml"),
    ),
    ("manifest add acme/howdy h.yml", model.RegisterManifest("acme/howdy", path="h.yml")),
    ("manifest Acme/Howdy.io", model.RegisterManifest("Acme/Howdy.io", attachment=True)),
    ("manifest acme/howdy", model.RegisterManifest("acme/howdy", attachment=True)),
    ("manifest add acme/howdy", model.RegisterManifest("acme/howdy", attachment=True)),
    ("register acme/howdy", model.RegisterManifest("acme/howdy", attachment=True)),
    ("manifest howdy", model.RegisterManifest("howdy", attachment=True)),
    ("manifests", model.ListManifests()),
]


@pytest.mark.parametrize(("text", "expected"), PARSES)
def test_parses(text: str, expected: model.Command) -> None:
    assert parse_command(text) == expected


EAST = Deploy(("dc-east",), version="1.0.0")


@pytest.mark.parametrize(
    "text",
    [
        "/nelson deploy svc 1.0.0 to dc-east",
        "nelson deploy svc 1.0.0 to dc-east",
        "Nelson, deploy svc 1.0.0 to dc-east",
        "@nelson deploy svc 1.0.0 to dc-east",
        "<@U0BOT123> deploy svc 1.0.0 to dc-east",
        "<@U0BOT123>: deploy svc 1.0.0 to dc-east",
        "<@U0BOT123|nelson> deploy svc 1.0.0 to dc-east",
        "  \n<@U0BOT123>  /nelson   deploy svc 1.0.0 to dc-east",
        "deploy \u201csvc\u201d 1.0.0 to dc-east",
        "deploy \u2018svc\u2019 1.0.0 to dc-east",
        "deploy\u00a0svc\u00a01.0.0 to\u202fdc-east",
        "deploy svc\u200b 1.0.0 to dc-east",
        'deploy "svc" "1.0.0" to "dc-east"',
        "deploy `svc` `1.0.0` to `dc-east`",
        "`deploy svc 1.0.0 to dc-east`",
        "```deploy svc 1.0.0 to dc-east```",
        '"deploy svc 1.0.0 to dc-east"',
        "deploy svc 1.0.0 to dc\u2011east",
        "deploy svc 1.0.0 to dc\u2013east",
        "deploy svc 1.0.0 to dc-east.",
        "deploy svc 1.0.0 to dc-east .",
        "deploy svc 1.0.0\r\nto dc-east",
        "deploy svc 1.0.0 to <http://dc-east|dc-east>",
        "/deploy svc 1.0.0 to dc-east",
    ],
)
def test_what_people_actually_type(text: str) -> None:
    assert parse_command(text) == EAST


def test_typographic_dashes_in_stack_names() -> None:
    # Phones turn `--` into an em dash.
    assert parse_command("inspect svc\u20141-2-3\u2014k3x9q0ab") == model.Inspect(STACK)


@pytest.mark.parametrize(
    ("raw", "plain"),
    [
        ("deploy &lt;x&gt; &amp; y", "deploy <x> & y"),
        ("&amp;lt;", "&lt;"),
        ("<#C123|general> and <#C456>", "#general and #C456"),
        ("<https://a.example/c|label>", "https://a.example/c"),
        ("<https://a.example/c>", "https://a.example/c"),
        ("<http://reg.example.com/svc|reg.example.com/svc>", "reg.example.com/svc"),
        ("<mailto:a@b.c|a@b.c>", "a@b.c"),
        ("<!here> <!channel> <!subteam^S123|@ops> <!subteam^S9>", "@here @channel @ops @S9"),
        ("<!date^1392734382^{date}|Feb 18, 2014>", "Feb 18, 2014"),
        ("<@U0123> hi <@U0456>", "hi @U0456"),
        ("\u2018a\u2019 \u201cb\u201d \u201ec\u201d", '\'a\' "b" "c"'),
        ("a\u00a0b\u2009c\u2007d", "a b c d"),
        ("a\u200b\u200c\u200d\u2060\ufeffb", "ab"),
        ("a\r\nb\rc", "a\nb\nc"),
        ("/nelson   stacks", "stacks"),
        ("NELSON: stacks", "stacks"),
        ("nelsonx stacks", "nelsonx stacks"),
        ("nelson", ""),
        ("stacks nelson", "stacks nelson"),
        ("lint\n  a:\n    b: 1\n\n", "lint\n  a:\n    b: 1"),
        ("5 < 6 > 4", "5 < 6 > 4"),
        ("deploy <unit> <version>", "deploy <unit> <version>"),
        ("<https://x.example/a|the docs>", "https://x.example/a"),
        ("<tel:+4912345|call me>", "tel:+4912345"),
    ],
)
def test_normalise(raw: str, plain: str) -> None:
    assert normalise(raw) == plain


FENCED = "units:\n  - name: a\n    ports:\n      - default->80/http\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "lint\n```yaml\nunits:\n  - name: a\n    ports:\n      - default-&gt;80/http\n\n```",
            model.Lint(text=FENCED),
        ),
        ("lint\n```\nunits:\n  - name: a\n```", model.Lint(text="units:\n  - name: a")),
        ("lint ```units:\n  - name: a```", model.Lint(text="units:\n  - name: a")),
        ("lint```units:\n  - name: a```", model.Lint(text="units:\n  - name: a")),
        ("lint manifest ```\n\tx: 1\n```", model.Lint(text="\tx: 1")),
        ("lint ```\nunits: [a]", model.Lint(text="units: [a]")),  # never closed
        ("lint\nunits:\n  - name: a\n", model.Lint(text="units:\n  - name: a")),
        ("lint \n\n   \n  units:\n    - a", model.Lint(text="  units:\n    - a")),
        ("lint units:\n  - name: a", model.Lint(text="units:\n  - name: a")),
        (
            "lint\n```\nname: \u201cquoted\u201d &amp; <https://x.example|x.example>\n```",
            model.Lint(text='name: "quoted" & x.example'),
        ),
        (
            "manifest acme/a\nunits:\n  - name: a\n",
            model.RegisterManifest("acme/a", text="units:\n  - name: a"),
        ),
        (
            "manifest add acme/a ```yaml\nunits: []\n```",
            model.RegisterManifest("acme/a", text="units: []"),
        ),
        (
            "<@U0BOT> manifest acme/a\n```\nunits:\n  - name: a\n\n    # comment\n```",
            model.RegisterManifest("acme/a", text="units:\n  - name: a\n\n    # comment"),
        ),
    ],
)
def test_inline_manifests_are_kept_exactly(text: str, expected: model.Command) -> None:
    assert parse_command(text) == expected


def test_manifest_pasted_the_way_front_ends_send_it() -> None:
    manifest = "units:\n  - name: a\n    description: 'x: y'\n\nplans:\n  - name: default\n"
    assert parse_command(f"manifest acme/a\n```\n{manifest}\n```") == model.RegisterManifest(
        "acme/a", text=manifest
    )
    # The newline before the closing fence belongs to the fence.
    assert parse_command(f"lint\n```\n{manifest}```") == model.Lint(text=manifest[:-1])


def error(text: str) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_command(text)
    return info.value


DEPLOY_USAGE = (
    "deploy <unit> <version> [to <dc>[,<dc>...] | everywhere] [in <namespace>] [plan <plan>] "
    "[image <ref>] [emergency because <reason>]"
)
STACKS_USAGE = "stacks [in <namespace>] [at <dc>] [status <status>[,<status>...]] [unit <unit>]"

ERRORS: list[tuple[str, str, str | None, str | None]] = [
    # text, part of the message, suggestion (None: none), usage (None: none)
    ("deploi svc 1.0.0", "I don't know the command 'deploi'.", "deploy", None),
    ("stcks", "I don't know the command 'stcks'.", "stacks", None),
    ("stack", "I don't know the command 'stack'.", "stacks", None),
    ("polcies", "I don't know the command 'polcies'.", "policies", None),
    ("frobnicate", "I don't know the command 'frobnicate'.", None, None),
    ("deploy", "`deploy` needs a unit name (like howdy-http).", None, DEPLOY_USAGE),
    ("deploy svc", "`deploy` needs a version (like 1.2.3).", None, DEPLOY_USAGE),
    ("deploy svc to dc-east", "`deploy` needs a version (like 1.2.3) before `to`.", None, None),
    (
        "deploy 1.2.3 to dc-east",
        "needs a unit name (like howdy-http) before the version",
        None,
        None,
    ),
    (
        "deploy svc 1.x",
        "'1.x' is not a semantic version (expected MAJOR.MINOR.PATCH, like 1.2.3).",
        None,
        DEPLOY_USAGE,
    ),
    ("deploy svc latest", "'latest' is not a semantic version", None, None),
    ("deploy svc 1.2.3.4", "'1.2.3.4' is not a semantic version", None, None),
    ("deploy svc 1.\u0662.3", "is not a semantic version", None, None),
    ("deploy svc 99999999999", "too large", None, None),
    ("deploy svc 1" + "0" * 500, "is not a semantic version", None, None),
    ("deploy Bad_Name 1.0.0", "'Bad_Name' is not a valid unit name", None, DEPLOY_USAGE),
    ("deploy \u212asvc 1.0.0", "is not a valid unit name", None, None),
    ("deploy x 1.0.0 too dc-east", "I don't understand 'too' in `deploy`.", "to", DEPLOY_USAGE),
    ("deploy x 1.0.0 inn qa", "I don't understand 'inn' in `deploy`.", "in", None),
    ("deploy x 1.0.0 to dc-east plna big", "'plna'", "plan", None),
    ("deploy x 1.0.0 to dc-east dc-west", "separate them with commas", None, None),
    ("deploy x 1.0.0 to", "`to` needs at least one datacenter", None, DEPLOY_USAGE),
    ("deploy x 1.0.0 to in qa", "`to` needs at least one datacenter", None, None),
    ("deploy x 1.0.0 in", "`deploy` needs a namespace (like qa or dev/sandbox).", None, None),
    ("deploy x 1.0.0 in plan big", "`in` needs a namespace", None, None),
    ("deploy x 1.0.0 in qa/", "'qa/' is not a valid namespace", None, None),
    ("deploy x 1.0.0 in qa in dev", "`in` is given twice.", None, None),
    ("deploy x 1.0.0 to dc-a, everywhere", "say either `everywhere`", None, None),
    ("deploy x 1.0.0 to dc-a everywhere", "say either `everywhere`", None, None),
    ("deploy x 1.0.0 everywhere to dc-a", "say either `everywhere`", None, None),
    ("deploy x 1.0.0 to dc-a to dc-b", "say either `everywhere`", None, None),
    ("deploy x 1.0.0 to dc_a", "'dc_a' is not a valid datacenter name", None, None),
    ("deploy x 1.0.0 image", "`deploy` needs an image reference", None, None),
    ("deploy x 1.0.0 image '!bad'", "'!bad' is not a valid image reference", None, None),
    ("commit svc 1.0.0", "`commit` needs `to <namespace>`.", None, "commit <unit> <version>"),
    ("commit svc 1.0.0 qa", "'qa' in `commit`; it needs `to <namespace>`.", None, None),
    ("commit svc 1.0.0 to", "`commit` needs a namespace", None, None),
    ("commit svc 1.0.0 to qa now", "I don't understand 'now' in `commit`.", None, None),
    ("stacks redy", "I don't understand 'redy' in `stacks`.", "ready", STACKS_USAGE),
    ("stacks status redy", "'redy' is not a stack status; the statuses are pending", "ready", None),
    ("stacks status ready, fialed", "'fialed' is not a stack status", "failed", None),
    ("stacks status", "`status` needs at least one status", None, None),
    ("stacks ready failed", "list several statuses with commas", None, None),
    ("stacks in qa in dev", "`in` is given twice.", None, None),
    ("stacks at dc-a on dc-b", "the datacenter is given twice.", None, None),
    ("stacks unti svc", "'unti'", "unit", None),
    ("units status ready", "I don't understand 'status' in `units`.", None, "units [in"),
    ("inspect", "`inspect` needs a stack name or guid", None, "inspect <stack|guid>"),
    ("inspect a b", "I did not expect 'b' after `inspect a`.", None, None),
    ("inspect svc:1", "'svc:1' is not a valid stack name or guid", None, None),
    ("logs", "`logs` needs a stack name or guid", None, "logs <stack>"),
    ("deprecate svc", "`deprecate` needs a version", None, "deprecate <unit> <version>"),
    ("approve", "`approve` needs an approval id (like 12).", None, "approve <id>"),
    (
        "approve twelve",
        "'twelve' is not an approval id: ids are numbers, like 12 or #12.",
        None,
        None,
    ),
    ("approve -3", "ids are numbers", None, None),
    ("approve \u00b2", "ids are numbers", None, None),
    ("approve \u0661\u0662", "ids are numbers", None, None),
    ("approve 1" + "0" * 30, "too large", None, None),
    ("approve 12 13", "I did not expect '13' after `approve 12`.", None, None),
    ("reject", "`reject` needs an approval id", None, "reject <id> [reason...]"),
    ("reject soon", "ids are numbers", None, None),
    ("whoami please now", "I did not expect 'please now' after `whoami`.", None, "whoami"),
    ("approvals 3", "I did not expect '3' after `approvals`.", None, None),
    ("graph", "`graph` needs a unit name", None, "graph <unit>"),
    ("help deplyo", "I don't know the command 'deplyo'.", "deploy", None),
    ("help deploy now", "I did not expect 'now' after `help deploy`.", None, None),
    ("manifest", "`manifest` needs a repository name (like acme/howdy).", "manifests", None),
    ("manifest\n```\nunits: []\n```", "`manifest` needs a repository name", "manifests", None),
    ("manifest\nacme/a", "`manifest` needs a repository name", "manifests", None),
    ("manifest acme/a b c", "I expected one path, not 'b c'", None, None),
    ("manifest -x", "'-x' is not a valid repository name", None, None),
    ("manifest acme/a x.yml\n```\na: 1\n```", "give either a path or the manifest", None, None),
    ("lint\n```\na: 1\n```\nthanks", "I did not expect 'thanks' after the code block.", None, None),
    ("lint my file", "I expected one path", None, "lint [manifest] <path>"),
]


@pytest.mark.parametrize(("text", "message", "suggestion", "usage"), ERRORS)
def test_errors(text: str, message: str, suggestion: str | None, usage: str | None) -> None:
    e = error(text)
    assert message in e.message
    assert e.suggestion == (f"did you mean `{suggestion}`?" if suggestion else None)
    if usage is not None:
        assert e.usage.startswith(usage)


def test_errors_for_a_command_carry_its_usage_and_point_at_its_help() -> None:
    e = error("deploy svc 1.0 to")
    assert e.usage == DEPLOY_USAGE
    assert e.hint == "`help deploy` explains it, with examples."
    lint, spec = error("lint a b"), find_spec("lint")
    assert spec is not None and lint.usage.splitlines() == list(spec.usages)


@pytest.mark.parametrize("text", ["", "   \n\t ", "<@U0BOT123>", "/nelson", "nelson:", ".", "..."])
def test_empty_messages_point_at_help(text: str) -> None:
    e = error(text)
    assert "no command" in e.message and "`help`" in e.message


def test_unknown_command_lists_a_few_commands() -> None:
    e = error("frobnicate")
    assert e.hint.startswith("`help` lists them all")
    assert "`deploy`" in e.hint and "`stacks`" in e.hint
    assert e.usage == ""


def test_quoted_back_input_is_clipped_and_printable() -> None:
    e = error("x\x00" * 500)
    assert len(e.message) < 120 and "\x00" not in e.message


def test_too_long() -> None:
    e = error("lint\n```\n" + "a: 1\n" * 50_000 + "```")
    assert "too long" in e.message and "Attach" in e.hint


def test_suggest() -> None:
    assert suggest("deplyo", ["deploy", "stacks"]) == "deploy"
    assert suggest("DEPLOI", ["deploy"]) == "deploy"
    assert suggest("zzz", ["deploy"]) is None
    assert suggest("", ["deploy"]) is None
    assert suggest("x" * 1000, ["deploy"]) is None


# -- the table, help and the reference ------------------------------------------------------


def test_the_table_covers_every_command_type_once() -> None:
    built = [kind for spec in COMMANDS for kind in (spec.build, *spec.also_builds)]
    assert set(built) == set(typing.get_args(model.Command))
    assert len(built) == len(set(built))
    words = [w for spec in COMMANDS for w in (spec.name, *spec.aliases)]
    assert len(words) == len(set(words))
    for spec in COMMANDS:
        assert spec.summary and spec.summary == spec.summary.strip()
        assert not spec.summary.endswith(".")


def test_usage_is_generated_from_args_and_clauses() -> None:
    by_name = {spec.name: spec for spec in COMMANDS}
    assert by_name["deploy"].usages == (DEPLOY_USAGE,)
    assert by_name["stacks"].usages == (STACKS_USAGE,)
    assert by_name["commit"].usage == "commit <unit> <version> to <namespace>"
    assert by_name["reject"].usage == "reject <id> [reason...]"
    assert by_name["help"].usage == "help [command]"
    assert by_name["units"].usage == "units [in <namespace>] [at <dc>] [page <n> | after <unit>]"
    assert by_name["whoami"].usage == "whoami"


def test_help_overview_mentions_every_command_once_per_line() -> None:
    overview = help_overview()
    for spec in COMMANDS:
        lines = [line for line in overview.splitlines() if f"`{spec.usages[0]}`" in line]
        assert len(lines) == 1 and spec.summary in lines[0]
    assert "*Deploying*" in overview and "`help <command>`" in overview


@pytest.mark.parametrize("spec", COMMANDS, ids=lambda spec: spec.name)
def test_help_for_every_command_and_alias(spec: CommandSpec) -> None:
    assert spec is find_spec(spec.name)
    detail = help_for(spec.name)
    for usage in spec.usages:
        assert f"`{usage}`" in detail
    assert spec.summary in detail
    for alias in spec.aliases:
        assert help_for(alias) == detail
        assert f"`{alias}`" in detail
    assert help_for(f"  {spec.name.upper()} ") == detail
    for example in spec.examples:
        assert f"`{example}`" in detail


def test_help_for_unknown_topic() -> None:
    with pytest.raises(ParseError) as info:
        help_for("deplyo")
    assert info.value.message == "I don't know the command 'deplyo'."
    assert info.value.suggestion == "did you mean `deploy`?"
    with pytest.raises(ParseError):
        help_for("")


def test_help_details() -> None:
    detail = help_for("deploy")
    assert detail.startswith("*deploy* — release a version")
    assert "Examples:" in detail and "`deploy howdy-http 1.2.3 to dc-east`" in detail
    assert "Also: `dcs`" in help_for("datacenters")


def test_every_example_parses_to_its_own_command() -> None:
    for spec in COMMANDS:
        for example in spec.examples:
            assert type(parse_command(example)) in (spec.build, *spec.also_builds), example


def test_canonical_text_parses_back() -> None:
    for text, command in PARSES:
        assert parse_command(canonical(command)) == command, text
    assert canonical(Deploy(("a", "b"), namespace="qa")) == "deploy svc 1.2.0 to a, b in qa"
    assert canonical(model.Lint(path="my file.yml")) == 'lint "my file.yml"'


def test_reference_page_is_the_table() -> None:
    page = DOCS.read_text(encoding="utf-8")
    begin, end = "<!-- reference: begin -->\n\n", "\n<!-- reference: end -->"
    generated = page[page.index(begin) + len(begin) : page.index(end)]
    assert generated == render_reference(COMMANDS), "run `python -m commands.help`"
    for spec in COMMANDS:
        assert f"### `{spec.name}`" in page
        for usage in spec.usages:
            assert usage in page


def test_reference_page_examples_parse() -> None:
    page = DOCS.read_text(encoding="utf-8")
    examples = re.findall(r"^- `([^`]+)`$", page, flags=re.MULTILINE)
    assert len(examples) >= len(COMMANDS), "the reference lost its examples"
    for example in examples:
        parse_command(example)
