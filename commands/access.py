"""Who may do what: access rules from the configuration, checked on every command and click."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from fnmatch import fnmatchcase

from commands.settings import AccessRule, AccessSettings


class Role(StrEnum):
    VIEW = "view"
    DEPLOY = "deploy"
    APPROVE = "approve"
    ADMIN = "admin"


SLACK_USER_ID = re.compile(r"[UW][A-Z0-9]+")


@dataclass(frozen=True, slots=True)
class Principal:
    """The person asking: a Slack user or the console's local identity.

    Access entries match ids only: a Slack user by their user id (U…/W…) or the ids and
    @handles of their user groups as Slack's API reports them; the console by its configured
    identity. The display name is anyone's to choose, so it is shown and never matched."""

    user_id: str
    name: str = ""
    groups: frozenset[str] = field(default_factory=frozenset)  # ids (S…) and handles (@team)
    local: bool = False  # the console's identity, never a Slack user
    # An API token: it may do `token_right` (view, or deploy and view) in these namespaces
    # and nothing else; access rules and admin lists never match it.
    token_namespaces: tuple[str, ...] | None = None
    token_right: str = "view"

    def matches(self, entry: str) -> bool:
        if self.token_namespaces is not None:
            return False
        if entry == "*":
            return True
        if self.local:
            return entry == self.user_id
        # A Slack principal whose id is not Slack-shaped (a forged or corrupted payload) can
        # claim nothing by id, least of all a console identity such as `local`.
        if entry == self.user_id and SLACK_USER_ID.fullmatch(self.user_id):
            return True
        return entry in self.groups

    @property
    def label(self) -> str:
        return (
            f"{self.name} ({self.user_id})"
            if self.name and self.name != self.user_id
            else self.user_id
        )


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str  # names the rule that allowed or the rules that refused


def _namespace_matches(pattern: str, namespace: str) -> bool:
    # `dev` also covers nested namespaces such as `dev/sandbox`.
    return fnmatchcase(namespace, pattern) or namespace.startswith(pattern.rstrip("/") + "/")


def authorize(access: AccessSettings, who: Principal, role: Role, namespace: str) -> Decision:
    """Admins may do everything. Otherwise a rule whose namespace matches must list the person
    under the role, or under `admin` in that rule (namespace admins may do everything there).
    An API token may do what its scope says, and only that."""
    if who.token_namespaces is not None:
        return _token_decision(who, role, namespace)
    if any(who.matches(entry) for entry in access.admins):
        return Decision(True, "access.admins")
    matching: list[tuple[int, AccessRule]] = [
        (index, rule)
        for index, rule in enumerate(access.rules)
        if _namespace_matches(rule.namespace, namespace)
    ]
    for index, rule in matching:
        entries = getattr(rule, role.value) + rule.admin
        if any(who.matches(entry) for entry in entries):
            return Decision(True, f"access.rules[{index}] (namespace '{rule.namespace}')")
    if not matching:
        return Decision(
            False, f"no access rule covers namespace '{namespace}', so nobody but admins may {role}"
        )
    allowed = sorted({e for _, rule in matching for e in getattr(rule, role.value) + rule.admin})
    names = ", ".join(f"access.rules[{i}]" for i, _ in matching)
    whom = ", ".join(allowed) if allowed else "nobody but admins"
    return Decision(False, f"{names} for namespace '{namespace}' allow {role} only for {whom}")


def roles_in(access: AccessSettings, who: Principal, namespace: str) -> tuple[Role, ...]:
    return tuple(role for role in Role if authorize(access, who, role, namespace).allowed)


def _token_decision(who: Principal, role: Role, namespace: str) -> Decision:
    scope = ", ".join(who.token_namespaces or ()) or "no namespace"
    rights = (Role.VIEW, Role.DEPLOY) if who.token_right == Role.DEPLOY else (Role.VIEW,)
    if role not in rights:
        return Decision(False, f"the token may only {who.token_right} (in {scope})")
    if not any(_namespace_matches(n, namespace) for n in who.token_namespaces or ()):
        return Decision(False, f"the token is scoped to {scope}")
    return Decision(True, f"the token's scope ({who.token_right} in {scope})")
