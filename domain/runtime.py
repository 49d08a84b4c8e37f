"""What a scheduler is asked to run and what it reports back (plain data, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class PortSpec:
    label: str  # "default", "admin"
    number: int  # the port the manifest declares
    protocol: str  # http | https | tcp | wss


@dataclass(frozen=True, slots=True)
class HealthProbe:
    name: str
    port_label: str
    protocol: str  # http | https | tcp
    path: str | None
    timeout_seconds: int
    interval_seconds: int = 10


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    stack: str
    unit: str
    version: str
    namespace: str
    datacenter: str
    plan: str
    image: str  # in the runtime registry, by digest
    instances: int
    cpu: float
    memory_mb: int
    # may hold a Vault token (VAULT_TOKEN): kept out of the repr, which logs may show
    environment: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    ports: tuple[PortSpec, ...] = ()
    health: tuple[HealthProbe, ...] = ()
    schedule: str | None = None  # a cron expression for units that run on a schedule
    blueprint: str | None = None  # the template's text; None: the kind's default blueprint
    blueprint_name: str = ""  # how messages name it: "blueprint web@2"
    # the stack's Vault policy, for schedulers with a Vault integration (Nomad's `vault`
    # stanza); the Docker engine gets a token in `environment` instead
    vault_policy: str | None = None


@dataclass(frozen=True, slots=True)
class Instance:
    name: str
    state: str  # running | pending | failed
    ports: tuple[tuple[str, int], ...] = ()  # port label -> host port
    detail: str = ""
    host: str = "127.0.0.1"  # where the ports listen (a Nomad client's address)

    def port(self, label: str) -> int | None:
        return dict(self.ports).get(label)


@dataclass(frozen=True, slots=True)
class Health:
    healthy: bool
    detail: str  # the failing check and why, or what passed


@dataclass(frozen=True, slots=True)
class RuntimeReport:
    """What runs for a stack now, and whether its health checks pass."""

    instances: tuple[Instance, ...]
    health: Health | None = None  # None when the stack has no instances to probe


@dataclass(frozen=True, slots=True)
class Rendering:
    """What a deploy would submit to a datacenter's scheduler, without submitting it."""

    kind: str  # "Nomad job", "Docker container"
    spec: dict[str, Any]  # the request body (Nomad job JSON, Docker create options)
    source: str = ""  # the blueprint it came from
    problems: tuple[str, ...] = ()  # what the scheduler would refuse
    changes: tuple[str, ...] = ()  # what it would change (a plan's diff), one per line
    notes: tuple[str, ...] = field(default=())
