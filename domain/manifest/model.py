"""The manifest as typed values: what a repository's `.nelson.yml` declares."""

from __future__ import annotations

from dataclasses import dataclass

from domain.expiration import ExpirationPolicy
from domain.traffic import ShiftPolicy


@dataclass(frozen=True, slots=True)
class ManifestError:
    location: str  # e.g. plans[2].health_checks[0].path
    message: str
    line: int | None = None  # 1-based
    column: int | None = None

    def __str__(self) -> str:
        where = self.location or "(document)"
        if self.line is not None:
            where += f" (line {self.line}, column {self.column})"
        return f"{where}: {self.message}"


class ManifestInvalid(ValueError):
    def __init__(
        self, errors: tuple[ManifestError, ...], warnings: tuple[ManifestError, ...] = ()
    ) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors
        self.warnings = warnings


@dataclass(frozen=True, slots=True)
class Port:
    label: str
    number: int
    protocol: str  # http | https | tcp | wss


@dataclass(frozen=True, slots=True)
class Dependency:
    unit: str
    major: int
    minor: int


@dataclass(frozen=True, slots=True)
class Alert:
    name: str
    expression: str


@dataclass(frozen=True, slots=True)
class Alerting:
    alerts: tuple[Alert, ...] = ()
    rules: tuple[Alert, ...] = ()


@dataclass(frozen=True, slots=True)
class Resource:
    """An outside service the unit uses; each plan the unit runs with gives its URI."""

    name: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class Unit:
    name: str
    description: str = ""
    workflow: str = "default"
    ports: tuple[Port, ...] = ()
    dependencies: tuple[Dependency, ...] = ()
    resources: tuple[Resource, ...] = ()
    meta: tuple[str, ...] = ()
    alerting: Alerting | None = None

    def port(self, label: str) -> Port | None:
        return next((p for p in self.ports if p.label == label), None)

    @property
    def resource_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.resources)


@dataclass(frozen=True, slots=True)
class HealthCheck:
    name: str
    port_reference: str
    protocol: str
    path: str | None
    timeout_seconds: int
    interval_seconds: int


@dataclass(frozen=True, slots=True)
class TrafficShift:
    policy: ShiftPolicy
    duration_seconds: int


@dataclass(frozen=True, slots=True)
class Schedule:
    kind: str  # monthly | daily | hourly | quarter-hourly | once | cron
    cron: str  # the cron expression ("" for once)


@dataclass(frozen=True, slots=True)
class PlanResource:
    ref: str
    uri: str


@dataclass(frozen=True, slots=True)
class Volume:
    """An empty scratch volume mounted into the unit's containers."""

    name: str
    mount_path: str  # absolute
    size_mb: int


@dataclass(frozen=True, slots=True)
class Constraint:
    """Where the scheduler may place instances.

    kind: unique (one instance per distinct value of `field`), cluster (only where `field`
    equals `value`), group_by (spread over the values of `field`, at most `value` per value
    when given), like / unlike (only where `field` matches / does not match the regular
    expression `value`).
    """

    kind: str
    field: str
    value: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    cpu: float = 0.5
    memory: int = 512
    cpu_request: float | None = None
    memory_request: int | None = None
    instances: int = 1
    environment: tuple[tuple[str, str], ...] = ()
    health_checks: tuple[HealthCheck, ...] = ()
    traffic_shift: TrafficShift | None = None
    expiration_policy: ExpirationPolicy | None = None
    schedule: Schedule | None = None
    resources: tuple[PlanResource, ...] = ()
    alert_opt_outs: tuple[str, ...] = ()
    retries: int | None = None
    volumes: tuple[Volume, ...] = ()
    constraints: tuple[Constraint, ...] = ()
    workflow: str | None = None  # magnetar | canopus | pulsar; None: the datacenter's own
    blueprint: str | None = None  # `name` or `name@revision` (revision: a number or HEAD)

    def resource_uri(self, ref: str) -> str | None:
        return next((r.uri for r in self.resources if r.ref == ref), None)


# What a unit runs with where its namespace entry names no plan.
DEFAULT_PLAN = Plan(name="default")


@dataclass(frozen=True, slots=True)
class NamespaceUnit:
    ref: str
    plans: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NamespaceLoadbalancer:
    ref: str
    plan: str | None = None


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    units: tuple[NamespaceUnit, ...]
    loadbalancers: tuple[NamespaceLoadbalancer, ...] = ()


@dataclass(frozen=True, slots=True)
class DatacenterFilter:
    only: tuple[str, ...] = ()
    except_: tuple[str, ...] = ()

    def allows(self, datacenter: str) -> bool:
        if self.only and datacenter not in self.only:
            return False
        return datacenter not in self.except_


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    port_label: str
    port: int
    protocol: str
    unit: str
    unit_port: str


@dataclass(frozen=True, slots=True)
class Loadbalancer:
    name: str
    routes: tuple[Route, ...]


@dataclass(frozen=True, slots=True)
class Notifications:
    slack_channels: tuple[str, ...] = ()
    email_recipients: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Manifest:
    units: tuple[Unit, ...]
    plans: tuple[Plan, ...]
    namespaces: tuple[Namespace, ...]
    datacenters: DatacenterFilter = DatacenterFilter()
    loadbalancers: tuple[Loadbalancer, ...] = ()
    notifications: Notifications = Notifications()
    # Accepted, but worth a look: unknown top-level keys, stanzas Nelson would judge
    # differently. `lint` lists them.
    warnings: tuple[ManifestError, ...] = ()

    def unit(self, name: str) -> Unit | None:
        return next((u for u in self.units if u.name == name), None)

    def plan(self, name: str) -> Plan | None:
        """The plan of that name; `default` is Nelson's defaults unless the manifest has one."""
        found = next((p for p in self.plans if p.name == name), None)
        if found is None and name == DEFAULT_PLAN.name:
            return DEFAULT_PLAN
        return found

    def namespace(self, name: str) -> Namespace | None:
        return next((n for n in self.namespaces if n.name == name), None)

    def plans_for(self, unit: str, namespace: str) -> tuple[Plan, ...]:
        """The deployment matrix: one plan per stack the unit gets in the namespace."""
        ns = self.namespace(namespace)
        if ns is None:
            return ()
        entries = [entry for entry in ns.units if entry.ref == unit]
        names = [p for entry in entries for p in (entry.plans or (DEFAULT_PLAN.name,))]
        return tuple(plan for name in dict.fromkeys(names) if (plan := self.plan(name)))

    def namespaces_of(self, unit: str) -> tuple[str, ...]:
        return tuple(ns.name for ns in self.namespaces if any(u.ref == unit for u in ns.units))

    def unit_kind(self, name: str) -> str:
        """A job when every plan it uses anywhere has a schedule; otherwise a service."""
        plans = [
            self.plan(p)
            for ns in self.namespaces
            for entry in ns.units
            if entry.ref == name
            for p in (entry.plans or (DEFAULT_PLAN.name,))
        ]
        used = [p for p in plans if p is not None]
        return "job" if used and all(p.schedule is not None for p in used) else "service"
