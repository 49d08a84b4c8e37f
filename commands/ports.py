"""The interfaces command handlers need from the outside world.

Handlers depend only on these Protocols; `bot.bootstrap` picks the adapters. Later datacenter
kinds (Nomad, Kubernetes), secrets (Vault) and routers (HAProxy, Consul) are new classes that
satisfy the same small interfaces.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from commands.repositories import (
    ApprovalRepository,
    CiRepository,
    EventOutboxRepository,
    LifecycleRepository,
    LockRepository,
    ManifestRepository,
    OperationRepository,
    RouteRepository,
    StackRepository,
    TrafficRepository,
    UnitListingRepository,
    VaultTokenRepository,
    WorkflowClaimRepository,
)
from commands.repositories import OutboxEvent as OutboxEvent
from commands.repositories import VaultTokenRecord as VaultTokenRecord
from commands.repositories import WeightFence as WeightFence
from commands.repositories import WorkflowClaim as WorkflowClaim
from domain.records import Stack
from domain.runtime import Health, Instance, LaunchSpec, Rendering, RuntimeReport
from domain.versions import Version


class StoreError(Exception):
    """The database could not do what was asked; the message is safe to show to users."""


class Conflict(StoreError):
    """A uniqueness rule was hit (same release twice, same manifest revision)."""


class LeaseLost(StoreError):
    """This process no longer holds a route's lease, or the shift it steps changed (paused,
    reversed, cancelled, superseded, moved on by another replica): the weights were not
    written."""


class ClaimLost(StoreError):
    """This process no longer holds the claim on a stack's workflow (it expired, or another
    replica took it over): the write it fenced did not land, and the run must stop."""


class Store(
    ManifestRepository,
    StackRepository,
    ApprovalRepository,
    OperationRepository,
    LifecycleRepository,
    TrafficRepository,
    RouteRepository,
    VaultTokenRepository,
    CiRepository,
    LockRepository,
    WorkflowClaimRepository,
    UnitListingRepository,
    EventOutboxRepository,
    Protocol,
):
    """Durable state: every repository, as the wiring passes it around. Every method is one
    transaction unless it runs inside `unit_of_work()`."""

    def unit_of_work(self) -> AbstractAsyncContextManager[Store]:
        """The repositories bound to one transaction: `async with store.unit_of_work() as uow:`
        commits every write made through `uow` when the block ends, and none of them when it
        raises. Inside a unit of work, another one joins it."""
        ...

    async def close(self) -> None: ...


class RegistryError(Exception):
    """A registry could not do what was asked; the message names the registry and the image."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient  # worth retrying (5xx, 429, connection faults)


class ImageNotFound(RegistryError):
    pass


class Registry(Protocol):
    """Container registries: resolve a reference to a digest, copy an image between them."""

    async def resolve(self, image: str) -> str:
        """The digest (sha256:…) of `image` (registry/repo:tag or @digest)."""
        ...

    async def replicate(self, image: str, digest: str, to_registry: str) -> str:
        """Copy the image with this digest to `to_registry` (same repository name); returns
        the reference to pull it there (registry/repo@digest). Idempotent."""
        ...

    async def close(self) -> None: ...


class SchedulerError(Exception):
    """The datacenter's scheduler could not do what was asked; the message says what."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class Scheduler(Protocol):
    """One datacenter's scheduler (the Docker engine; later Nomad, Kubernetes)."""

    async def check(self) -> str | None:
        """None when it can take work now, else what to start or configure."""
        ...

    async def launch(self, spec: LaunchSpec) -> list[Instance]:
        """Run `spec.instances` instances of the stack. Idempotent: instances that already
        exist are kept, missing ones are created."""
        ...

    async def instances(self, stack: str) -> list[Instance]: ...

    async def health(self, spec: LaunchSpec) -> Health:
        """Probe the manifest's health checks on every instance."""
        ...

    async def delete(self, stack: str) -> int:
        """Remove every instance of the stack; returns how many there were."""
        ...

    async def render(self, spec: LaunchSpec) -> Rendering:
        """What `launch(spec)` would submit, checked by the scheduler where it can be, without
        running anything (SchedulerError when the spec cannot even be made)."""
        ...

    async def close(self) -> None: ...


class RouterError(Exception):
    """The router could not change routes; the message says what."""


@dataclass(frozen=True, slots=True)
class Route:
    """Where callers reach a unit's major version in one namespace of a datacenter."""

    namespace: str
    unit: str
    major: int

    @property
    def key(self) -> str:
        return f"{self.namespace.replace('/', '_')}_{self.unit}_{self.major}"


class Router(Protocol):
    """Routes traffic for (namespace, unit, major) to stacks by weight (HAProxy first;
    Consul and others later)."""

    async def check(self) -> str | None: ...

    async def address(self, route: Route) -> str:
        """host:port callers use for the route (created on first use)."""
        ...

    async def set_weights(
        self,
        route: Route,
        backends: dict[str, tuple[list[str], int]],
        fence: WeightFence | None = None,
    ) -> None:
        """Make the route send `weight` per mille of its traffic to each stack, whose
        instances listen at the given host:port addresses. Stacks not named keep their
        servers at their current weight; weight 0 keeps a stack attached but idle. With
        `fence`, nothing changes unless it still holds (`LeaseLost`)."""
        ...

    async def converge(self, wait: bool = True) -> None:
        """Bring what routes to what the route table says (a replica starting, a router
        restarted or changed by another replica). Without `wait`, it may skip a pass while
        another process is bringing the same router to the table."""
        ...

    async def weights(self, route: Route) -> dict[str, int]:
        """Per stack, the per mille of traffic it gets now."""
        ...

    async def remove(self, route: Route, stack: str) -> None: ...

    async def serving(self) -> set[str]:
        """Names of the stacks that get any traffic now, on every route."""
        ...

    async def close(self) -> None: ...


class SecretsError(Exception):
    """Vault could not do what was asked; the message names the Vault and the reason."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient  # worth retrying (5xx, connection faults)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token for one stack's containers. `token` goes to them and nowhere else (never to
    the database, logs or chat); the accessor is what the bot keeps to renew and revoke it."""

    token: str = field(repr=False)
    accessor: str
    address: str  # VAULT_ADDR for the containers


@dataclass(frozen=True, slots=True)
class SecretsStatus:
    reachable: bool
    sealed: bool | None
    detail: str  # "unsealed, Vault 1.15.2" or why it cannot be reached


class Secrets(Protocol):
    """One datacenter's Vault: a policy per stack and, where the scheduler has no Vault
    integration of its own (the Docker engine), a periodic token limited to that policy.
    Every method is idempotent; deleting what is already gone is not an error."""

    async def status(self) -> SecretsStatus: ...

    async def write_policy(self, name: str, read_paths: Sequence[str]) -> None: ...

    async def policy(self, name: str) -> str | None:
        """The policy's text, None when there is none."""
        ...

    async def delete_policy(self, name: str) -> None: ...

    async def policies(self) -> list[str]:
        """The names of every ACL policy."""
        ...

    async def issue_token(self, policy: str, period_seconds: int, stack: str) -> IssuedToken: ...

    async def renew(self, accessor: str) -> bool:
        """Extend the token's period; False when the token is gone (expired, revoked)."""
        ...

    async def revoke(self, accessor: str) -> None: ...

    async def close(self) -> None: ...


class ConsulStatus(Protocol):
    """A datacenter's Consul, as `datacenters` reports it."""

    async def status(self) -> str:
        """One line: its leader, or why it cannot be reached."""
        ...


@runtime_checkable
class PublishedRoutes(Protocol):
    """A router that publishes routing tables under keys (Lighthouse), for `inspect`."""

    async def keys_for(self, stack: str) -> list[str]: ...


class WorkflowPort(Protocol):
    """Takes pending stacks and drives them to ready (or failed) on their datacenter."""

    async def available_for(self, datacenter: str) -> str | None:
        """None when deploys can run in this datacenter now, else a sentence saying why not."""
        ...

    async def submit(self, stack_ids: Sequence[int]) -> None: ...

    async def runtime(self, stack: Stack) -> RuntimeReport:
        """What the datacenter runs for the stack now (SchedulerError if it cannot say)."""
        ...

    async def render(
        self,
        unit: str,
        version: Version,
        datacenter: str,
        namespace: str,
        plan: str,
        manifest_id: int,
        image: str,
    ) -> Rendering:
        """What a deploy of this release would submit to the datacenter, without deploying
        (SchedulerError when it cannot be made: a blueprint that does not render, say)."""
        ...


class Clock(Protocol):
    def now(self) -> datetime: ...
