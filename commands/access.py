"""Who may do what: access rules from the configuration, checked on every command and click."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from fnmatch import fnmatchcase

from commands.settings import AccessRule, AccessSettings


class Role(StrEnum):
    VIEW = "view"
    DEPLOY = "deploy"
    APPROVE = "approve"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """The person asking: a Slack user (id, display name, user groups) or the local user."""

    user_id: str
    name: str = ""
    groups: frozenset[str] = field(default_factory=frozenset)  # ids (S…) and handles (@team)

    def matches(self, entry: str) -> bool:
        if entry == "*":
            return True
        if entry in (self.user_id, self.name):
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
    under the role, or under `admin` in that rule (namespace admins may do everything there)."""
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
