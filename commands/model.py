"""Typed commands: what the grammar produces from chat text and what handlers take."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from domain.locks import Until
from domain.states import StackStatus
from domain.versions import Version


@dataclass(frozen=True, slots=True)
class Help:
    topic: str | None = None


@dataclass(frozen=True, slots=True)
class Deploy:
    unit: str
    version: Version
    datacenters: tuple[str, ...] = ()  # empty: the default datacenter(s) of the namespace
    everywhere: bool = False
    namespace: str | None = None  # None: the configured default namespace
    plan: str | None = None  # None: every plan the manifest gives the unit in the namespace
    image: str | None = None  # None: the configured image template
    emergency: bool = False  # through locks and freezes (admins only, with a reason)
    reason: str = ""  # why, for an emergency


@dataclass(frozen=True, slots=True)
class Commit:
    unit: str
    version: Version
    namespace: str


@dataclass(frozen=True, slots=True)
class ListStacks:
    namespace: str | None = None
    datacenter: str | None = None
    statuses: tuple[StackStatus, ...] = ()
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class ListUnits:
    namespace: str | None = None
    datacenter: str | None = None
    page: int | None = None  # 1 for the first page of UNITS_PER_PAGE units, sorted by name
    after: str | None = None  # or the page of units after this name (what "next" says)


@dataclass(frozen=True, slots=True)
class Inspect:
    stack: str  # name or guid


@dataclass(frozen=True, slots=True)
class Logs:
    stack: str


@dataclass(frozen=True, slots=True)
class Runtime:
    stack: str


@dataclass(frozen=True, slots=True)
class Redeploy:
    stack: str


@dataclass(frozen=True, slots=True)
class Deprecate:
    unit: str
    version: Version


@dataclass(frozen=True, slots=True)
class Keep:
    stack: str = ""
    # the button of a cleanup announcement names its unit's stacks by id
    stack_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Remove:
    stack: str = ""
    # the button of a cleanup announcement names its unit's stacks by id
    stack_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ListApprovals:
    pass


@dataclass(frozen=True, slots=True)
class Approve:
    approval_id: int


@dataclass(frozen=True, slots=True)
class Reject:
    approval_id: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Reverse:
    stack: str = ""
    shift_id: int | None = None  # the button of a traffic shift names the shift


@dataclass(frozen=True, slots=True)
class Pause:
    stack: str = ""
    shift_id: int | None = None  # the button of a traffic shift names the shift


@dataclass(frozen=True, slots=True)
class Resume:
    stack: str = ""
    shift_id: int | None = None  # the button of a traffic shift names the shift


@dataclass(frozen=True, slots=True)
class Traffic:
    unit: str | None = None
    namespace: str | None = None
    datacenter: str | None = None


@dataclass(frozen=True, slots=True)
class ListDatacenters:
    pass


@dataclass(frozen=True, slots=True)
class CleanupPolicies:
    pass


@dataclass(frozen=True, slots=True)
class Lint:
    """Lint a manifest. Exactly one source: a path, inline text, or a file attached in Slack."""

    path: str | None = None
    text: str | None = None
    attachment: bool = False


@dataclass(frozen=True, slots=True)
class RegisterManifest:
    """`manifest <repo> <path>` or `manifest <repo>` + inline text / attached file."""

    repository: str
    path: str | None = None
    text: str | None = None
    attachment: bool = False


@dataclass(frozen=True, slots=True)
class ListManifests:
    pass


@dataclass(frozen=True, slots=True)
class RegisterBlueprint:
    """`blueprint <name> <path>` or `blueprint <name>` + inline text / attached file."""

    name: str
    path: str | None = None
    text: str | None = None
    attachment: bool = False


@dataclass(frozen=True, slots=True)
class ListBlueprints:
    pass


@dataclass(frozen=True, slots=True)
class Render:
    """`render <unit> <version> at <dc> [in <ns>] [plan <plan>]`: a deploy's spec, dry."""

    unit: str
    version: Version
    datacenter: str
    namespace: str | None = None
    plan: str | None = None


@dataclass(frozen=True, slots=True)
class Whoami:
    pass


@dataclass(frozen=True, slots=True)
class Graph:
    unit: str


# -- CI: releases announced ahead of deploys, API tokens -----------------------------------------


@dataclass(frozen=True, slots=True)
class Announce:
    """`announce <unit> <version> image <ref>`: record a release (a deployable) without
    deploying it; a reference with a digest (`@sha256:…`) fixes the digest too."""

    unit: str
    version: Version
    image: str


@dataclass(frozen=True, slots=True)
class CreateToken:
    """`token create <name> for <ns>[,<ns>…] [can deploy|view]`."""

    name: str
    namespaces: tuple[str, ...]
    right: str = "deploy"


@dataclass(frozen=True, slots=True)
class ListTokens:
    pass


@dataclass(frozen=True, slots=True)
class RevokeToken:
    name: str


# -- locks and freezes ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lock:
    unit: str
    namespace: str | None = None  # None: every namespace
    duration: timedelta | None = None  # None: until `unlock`
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Unlock:
    unit: str
    namespace: str | None = None  # None: every lock of the unit


@dataclass(frozen=True, slots=True)
class Freeze:
    namespace: str
    until: Until
    datacenter: str | None = None  # None: every datacenter
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Unfreeze:
    namespace: str
    datacenter: str | None = None  # None: every freeze of the namespace


@dataclass(frozen=True, slots=True)
class ListLocks:
    pass


@dataclass(frozen=True, slots=True)
class Rollback:
    unit: str
    namespace: str | None = None  # None: the default namespace
    datacenter: str | None = None  # None: every datacenter with something to roll back
    stack: str | None = None  # roll back only from this stack (what a button offered)


Command = (
    Help
    | Deploy
    | Commit
    | ListStacks
    | ListUnits
    | Inspect
    | Logs
    | Runtime
    | Redeploy
    | Deprecate
    | Keep
    | Remove
    | ListApprovals
    | Approve
    | Reject
    | Reverse
    | Pause
    | Resume
    | Traffic
    | ListDatacenters
    | CleanupPolicies
    | Lint
    | RegisterManifest
    | ListManifests
    | RegisterBlueprint
    | ListBlueprints
    | Render
    | Whoami
    | Graph
    | Announce
    | CreateToken
    | ListTokens
    | RevokeToken
    | Lock
    | Unlock
    | Freeze
    | Unfreeze
    | ListLocks
    | Rollback
)
