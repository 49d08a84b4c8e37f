from __future__ import annotations

import pytest

from commands import model
from commands.grammar import COMMANDS, help_for, help_overview, parse_command
from commands.replies import ParseError
from commands.text import normalise
from domain.states import StackStatus
from domain.versions import Version

V = Version.parse


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("deploy svc v1.2 to dc-east", model.Deploy("svc", V("1.2.0"), ("dc-east",))),
        (
            "Deploy svc 1.2.0 to dc-east, dc-west in qa",
            model.Deploy("svc", V("1.2.0"), ("dc-east", "dc-west"), namespace="qa"),
        ),
        (
            "deploy svc 1.2.0 to dc-east,dc-west",
            model.Deploy("svc", V("1.2.0"), ("dc-east", "dc-west")),
        ),
        ("deploy svc 1.2.0 to dc-a and dc-b", model.Deploy("svc", V("1.2.0"), ("dc-a", "dc-b"))),
        ("deploy svc 1.2.0 everywhere", model.Deploy("svc", V("1.2.0"), everywhere=True)),
        ("deploy svc 1.2.0 to everywhere", model.Deploy("svc", V("1.2.0"), everywhere=True)),
        ("deploy svc 1.2.0 to all", model.Deploy("svc", V("1.2.0"), everywhere=True)),
        (
            "deploy svc 1.2.0 plan big in dev/sandbox to dc-east",
            model.Deploy("svc", V("1.2.0"), ("dc-east",), namespace="dev/sandbox", plan="big"),
        ),
        (
            "deploy svc 2 image reg.example.com/svc@sha256:abc",
            model.Deploy("svc", V("2.0.0"), image="reg.example.com/svc@sha256:abc"),
        ),
        ("   deploy\tsvc   1.0.0   on  dc-east  ", model.Deploy("svc", V("1.0.0"), ("dc-east",))),
        ("deploy svc 1.0.0 to dc-east.", model.Deploy("svc", V("1.0.0"), ("dc-east",))),
        ("commit svc 1.2.3 to qa", model.Commit("svc", V("1.2.3"), "qa")),
        ("stacks", model.ListStacks()),
        (
            "stacks in qa at dc-east status ready,warming unit svc",
            model.ListStacks("qa", "dc-east", (StackStatus.READY, StackStatus.WARMING), "svc"),
        ),
        (
            "stacks status ready, failed",
            model.ListStacks(statuses=(StackStatus.READY, StackStatus.FAILED)),
        ),
        ("units in prod at dc-west", model.ListUnits("prod", "dc-west")),
        ("inspect svc--1-2-3--k3x9q0ab", model.Inspect("svc--1-2-3--k3x9q0ab")),
        ("logs 4f2a9c1b7e", model.Logs("4f2a9c1b7e")),
        ("runtime svc--1-2-3--k3x9q0ab", model.Runtime("svc--1-2-3--k3x9q0ab")),
        ("redeploy svc--1-2-3--k3x9q0ab", model.Redeploy("svc--1-2-3--k3x9q0ab")),
        ("reverse svc--1-2-3--k3x9q0ab", model.Reverse("svc--1-2-3--k3x9q0ab")),
        ("deprecate svc 1.4", model.Deprecate("svc", V("1.4.0"))),
        ("approvals", model.ListApprovals()),
        ("approve 12", model.Approve(12)),
        ("approve #12", model.Approve(12)),
        ("reject #3 error rate too high", model.Reject(3, "error rate too high")),
        ("datacenters", model.ListDatacenters()),
        ("dcs", model.ListDatacenters()),
        ("cleanup-policies", model.CleanupPolicies()),
        ("policies", model.CleanupPolicies()),
        ("whoami", model.Whoami()),
        ("graph accounts", model.Graph("accounts")),
        ("help", model.Help()),
        ("help deploy", model.Help("deploy")),
        ("help dcs", model.Help("datacenters")),
        ("?", model.Help()),
        ("lint manifest examples/a.yml", model.Lint(path="examples/a.yml")),
        ("lint examples/a.yml", model.Lint(path="examples/a.yml")),
        ("lint", model.Lint(attachment=True)),
        (
            "manifest acme/howdy examples/h.yml",
            model.RegisterManifest("acme/howdy", path="examples/h.yml"),
        ),
        ("manifest add acme/howdy h.yml", model.RegisterManifest("acme/howdy", path="h.yml")),
        ("manifest acme/howdy", model.RegisterManifest("acme/howdy", attachment=True)),
        ("manifests", model.ListManifests()),
    ],
)
def test_parses(text: str, expected: model.Command) -> None:
    assert parse_command(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "/nelson deploy svc 1.0.0 to dc-east",
        "nelson deploy svc 1.0.0 to dc-east",
        "<@U0BOT123> deploy svc 1.0.0 to dc-east",
        "<@U0BOT123>: deploy svc 1.0.0 to dc-east",
        "deploy svc 1.0.0 to dc\u2011east".replace("\u2011", "-"),
        "deploy \u201csvc\u201d 1.0.0 to dc-east",
        "deploy\u00a0svc 1.0.0 to dc-east",
        'deploy "svc" "1.0.0" to dc-east',
    ],
)
def test_what_people_actually_type(text: str) -> None:
    assert parse_command(text) == model.Deploy("svc", V("1.0.0"), ("dc-east",))


def test_slack_markup_is_undone() -> None:
    assert normalise("deploy &lt;x&gt; &amp; <#C123|general> <https://a.b/c|label>") == (
        "deploy <x> & #general https://a.b/c"
    )
    assert normalise("<mailto:a@b.c|a@b.c> <!here> <!subteam^S123|@ops>") == "a@b.c @here @ops"
    assert normalise("\u2018a\u2019 \u201cb\u201d") == "'a' \"b\""


def test_inline_manifest_kept_exactly() -> None:
    text = "lint\n```yaml\nunits:\n  - name: a\n    ports:\n      - default-&gt;80/http\n```"
    assert parse_command(text) == model.Lint(
        text="units:\n  - name: a\n    ports:\n      - default->80/http\n"
    )
    registered = parse_command("manifest acme/a\nunits:\n  - name: a\n")
    assert registered == model.RegisterManifest("acme/a", text="units:\n  - name: a")


def error(text: str) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_command(text)
    return info.value


def test_unknown_command_suggests() -> None:
    e = error("deploi svc 1.0.0")
    assert e.message == "I don't know the command 'deploi'."
    assert e.suggestion == "did you mean `deploy`?"
    assert error("stcks").suggestion == "did you mean `stacks`?"
    assert error("frobnicate").suggestion is None


def test_empty_and_mention_only() -> None:
    assert "no command" in error("").message
    assert "no command" in error("<@U0BOT123>").message
    assert "no command" in error("   \n  ").message


def test_unknown_deploy_clause_suggests_to() -> None:
    e = error("deploy x 1.0.0 too dc-east")
    assert "'too'" in e.message and e.suggestion == "did you mean `to`?"
    assert e.usage.startswith("deploy <unit> <version>")


def test_missing_arguments_name_what_and_show_usage() -> None:
    e = error("deploy svc")
    assert "needs a version" in e.message and e.usage.startswith("deploy")
    assert "needs unit name" in error("deploy").message
    assert "`to` needs at least one datacenter" in error("deploy svc 1.0.0 to").message
    assert "needs `to <namespace>`" in error("commit svc 1.0.0").message


def test_bad_values() -> None:
    assert "'1.x' is not a semantic version" in error("deploy svc 1.x").message
    assert "ids are numbers" in error("approve twelve").message
    assert (
        "'Bad_Name' is not a valid unit name".lower()
        in error("deploy Bad_Name 1.0.0").message.lower()
    )
    e = error("stacks status redy")
    assert "not a stack status" in e.message and e.suggestion == "did you mean `ready`?"
    assert "given twice" in error("deploy svc 1.0.0 in qa in dev").message
    assert "either `everywhere`" in error("deploy svc 1.0.0 to dc-a, everywhere").message


def test_extra_words_are_named() -> None:
    e = error("whoami please now")
    assert "'please now'" in e.message


def test_help_is_generated_from_the_table() -> None:
    overview = help_overview()
    for spec in COMMANDS:
        assert spec.usage in overview
        detail = help_for(spec.name)
        assert spec.usage in detail
        for alias in spec.aliases:
            assert help_for(alias) == detail
    assert "Examples:" in help_for("deploy")
    with pytest.raises(ParseError) as info:
        help_for("deplyo")
    assert info.value.suggestion == "did you mean `deploy`?"


def test_every_example_in_help_parses() -> None:
    for spec in COMMANDS:
        for example in spec.examples:
            assert parse_command(example) is not None


def test_command_reference_matches_the_grammar() -> None:
    from pathlib import Path

    reference = (Path(__file__).resolve().parents[2] / "docs" / "commands.md").read_text()
    for spec in COMMANDS:
        assert f"### `{spec.name}`" in reference
        assert spec.usage in reference
