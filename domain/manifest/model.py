"""The manifest as typed values: what a repository's `.nelson.yml` declares."""

from __future__ import annotations

from dataclasses import dataclass


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
    def __init__(self, errors: tuple[ManifestError, ...]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Port:
    label: str
    number: int
    protocol: str  # http | https | tcp


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
class Unit:
    name: str
    description: str = ""
    workflow: str = "default"
    ports: tuple[Port, ...] = ()
    dependencies: tuple[Dependency, ...] = ()
    resources: tuple[str, ...] = ()
    meta: tuple[str, ...] = ()
    alerting: Alerting | None = None

    def port(self, label: str) -> Port | None:
        return next((p for p in self.ports if p.label == label), None)


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
    policy: str  # linear | atomic
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
    expiration_policy: str | None = None
    schedule: Schedule | None = None
    resources: tuple[PlanResource, ...] = ()
    alert_opt_outs: tuple[str, ...] = ()
    blueprint: str | None = None  # name[@revision] of the scheduler template to use


@dataclass(frozen=True, slots=True)
class NamespaceUnit:
    ref: str
    plans: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    units: tuple[NamespaceUnit, ...]


@dataclass(frozen=True, slots=True)
class DatacenterFilter:
    only: tuple[str, ...] = ()
    except_: tuple[str, ...] = ()

    def allows(self, datacenter: str) -> bool:
        if self.only:
            return datacenter in self.only
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

    def unit(self, name: str) -> Unit | None:
        return next((u for u in self.units if u.name == name), None)

    def plan(self, name: str) -> Plan | None:
        return next((p for p in self.plans if p.name == name), None)

    def namespace(self, name: str) -> Namespace | None:
        return next((n for n in self.namespaces if n.name == name), None)

    def plans_for(self, unit: str, namespace: str) -> tuple[Plan, ...]:
        """The deployment matrix: one plan per stack the unit gets in the namespace."""
        ns = self.namespace(namespace)
        if ns is None:
            return ()
        names = [p for entry in ns.units if entry.ref == unit for p in entry.plans]
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
            for p in entry.plans
        ]
        used = [p for p in plans if p is not None]
        return "job" if used and all(p.schedule is not None for p in used) else "service"
