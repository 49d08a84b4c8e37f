from commands.access import Principal, Role, authorize, roles_in
from commands.settings import AccessRule, AccessSettings

ACCESS = AccessSettings(
    admins=("UADMIN",),
    rules=(
        AccessRule(namespace="*", view=("*",)),
        AccessRule(namespace="dev", deploy=("*",)),
        AccessRule(namespace="prod", deploy=("@release",), approve=("S0ONCALL",)),
        AccessRule(namespace="qa", admin=("UQALEAD",)),
    ),
)

alice = Principal("UALICE", "alice")
releaser = Principal("UREL", "rel", frozenset({"@release"}))
oncall = Principal("UON", "on", frozenset({"S0ONCALL"}))


def test_everyone_views_everywhere() -> None:
    assert authorize(ACCESS, alice, Role.VIEW, "prod").allowed


def test_rule_for_namespace_covers_nested_namespaces() -> None:
    assert authorize(ACCESS, alice, Role.DEPLOY, "dev/sandbox").allowed
    assert not authorize(ACCESS, alice, Role.DEPLOY, "devious").allowed


def test_refusal_names_rule_and_who_is_allowed() -> None:
    decision = authorize(ACCESS, alice, Role.DEPLOY, "prod")
    assert not decision.allowed
    assert "access.rules[2]" in decision.reason
    assert "@release" in decision.reason


def test_groups_by_handle_and_id() -> None:
    assert authorize(ACCESS, releaser, Role.DEPLOY, "prod").allowed
    assert not authorize(ACCESS, releaser, Role.APPROVE, "prod").allowed
    assert authorize(ACCESS, oncall, Role.APPROVE, "prod").allowed


def test_admins_and_namespace_admins() -> None:
    assert authorize(ACCESS, Principal("UADMIN"), Role.ADMIN, "prod").reason == "access.admins"
    lead = Principal("UQALEAD")
    assert roles_in(ACCESS, lead, "qa") == (Role.VIEW, Role.DEPLOY, Role.APPROVE, Role.ADMIN)
    assert roles_in(ACCESS, lead, "prod") == (Role.VIEW,)


def test_namespace_without_any_rule_is_closed() -> None:
    access = AccessSettings(rules=(AccessRule(namespace="dev", view=("*",)),))
    decision = authorize(access, alice, Role.VIEW, "prod")
    assert not decision.allowed
    assert "no access rule covers namespace 'prod'" in decision.reason
