"""Everything a handler may use while it answers one command."""

from __future__ import annotations

import secrets as _secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from commands.access import Principal
from commands.approval_desk import ApprovalDesk
from commands.events import EventHub
from commands.lifecycle import Lifecycle
from commands.manifests import Manifests
from commands.ports import Clock, ConsulStatus, Store, WorkflowPort
from commands.settings import Settings
from commands.shifting import TrafficControl
from commands.stack_secrets import StackSecrets


@dataclass(frozen=True, slots=True)
class Services:
    """What the application is made of: built once (bot.bootstrap), shared by every request
    and every front end."""

    settings: Settings
    store: Store
    workflow: WorkflowPort
    clock: Clock
    events: EventHub = field(default_factory=EventHub)
    traffic: TrafficControl | None = None  # None where no datacenter routes traffic
    lifecycle: Lifecycle | None = None  # None where the cleanup does not run
    secrets: StackSecrets | None = None  # None where no datacenter has Vault
    consuls: Mapping[str, ConsulStatus] = field(default_factory=dict)  # per datacenter
    # built from the others when not given (embedders and tests)
    manifests: Manifests = field(default=None)  # type: ignore[assignment]
    desk: ApprovalDesk = field(default=None)  # type: ignore[assignment]
    random_bytes: Callable[[int], bytes] = _secrets.token_bytes  # new API tokens

    def __post_init__(self) -> None:
        if self.manifests is None:
            object.__setattr__(self, "manifests", Manifests(self.store, self.settings))
        if self.desk is None:
            desk = ApprovalDesk(self.settings, self.store, self.events, self.clock)
            object.__setattr__(self, "desk", desk)


@dataclass(frozen=True, slots=True)
class Context:
    principal: Principal
    settings: Settings
    store: Store
    workflow: WorkflowPort
    clock: Clock
    # Reading files by path is for the local console only: from Slack, a path would let
    # anyone probe the bot's own file system.
    local: bool = False
    attachment: str | None = None  # text of a file shared with the command, if any
    channel: str | None = None
    events: EventHub = field(default_factory=EventHub)
    traffic: TrafficControl | None = None  # None where no datacenter routes traffic
    lifecycle: Lifecycle | None = None  # None where the cleanup does not run
    secrets: StackSecrets | None = None  # None where no datacenter has Vault
    consuls: Mapping[str, ConsulStatus] = field(default_factory=dict)  # per datacenter
    # The program's one manifest reader; a context built without it reads through its own.
    manifests: Manifests = field(default=None)  # type: ignore[assignment]

    # The program's one approval desk; likewise.
    desk: ApprovalDesk = field(default=None)  # type: ignore[assignment]
    random_bytes: Callable[[int], bytes] = _secrets.token_bytes  # new API tokens

    def __post_init__(self) -> None:
        if self.manifests is None:
            object.__setattr__(self, "manifests", Manifests(self.store, self.settings))
        if self.desk is None:
            desk = ApprovalDesk(self.settings, self.store, self.events, self.clock)
            object.__setattr__(self, "desk", desk)
