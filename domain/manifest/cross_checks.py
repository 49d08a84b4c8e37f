"""Rules across stanzas: references resolve, and every unit fits each plan it runs with."""

from __future__ import annotations

from dataclasses import dataclass

from domain.manifest.model import DEFAULT_PLAN, Manifest, Plan, Unit
from domain.manifest.plans import unique
from domain.manifest.reader import Path, Reader, did_you_mean
from domain.manifest.values import snake_case


@dataclass(frozen=True, slots=True)
class _Use:
    """One unit running with one plan in one namespace (a cell of the deployment matrix)."""

    unit: Unit
    plan: Plan
    plan_index: int | None  # None: the default plan, declared nowhere
    namespace: str
    entry_path: Path


def cross_check(r: Reader, manifest: Manifest, default_namespace: str) -> None:
    for what, names in (
        ("unit", [(u.name, ("units", i, "name")) for i, u in enumerate(manifest.units)]),
        ("plan", [(p.name, ("plans", i, "name")) for i, p in enumerate(manifest.plans)]),
        (
            "namespace",
            [(n.name, ("namespaces", i, "name")) for i, n in enumerate(manifest.namespaces)],
        ),
        (
            "load balancer",
            [
                (lb.name, ("loadbalancers", i, "name"))
                for i, lb in enumerate(manifest.loadbalancers)
            ],
        ),
    ):
        unique(r, [(name, path) for name, path in names if name], what)
    uses = _check_namespaces(r, manifest, default_namespace)
    _check_uses(r, manifest, uses)
    _check_dependencies(r, manifest)
    _check_loadbalancers(r, manifest)


def _check_namespaces(r: Reader, manifest: Manifest, default_namespace: str) -> list[_Use]:
    unit_names = [u.name for u in manifest.units]
    plan_names = [p.name for p in manifest.plans]
    lb_names = [lb.name for lb in manifest.loadbalancers]
    plan_index = {p.name: i for i, p in enumerate(manifest.plans)}
    uses: list[_Use] = []
    for i, ns in enumerate(manifest.namespaces):
        for j, entry in enumerate(ns.units):
            upath: Path = ("namespaces", i, "units", j)
            unit = manifest.unit(entry.ref)
            if entry.ref and unit is None:
                r.error(
                    (*upath, "ref"),
                    f"there is no unit '{entry.ref}'" + did_you_mean(entry.ref, unit_names),
                )
            for k, name in enumerate(entry.plans):
                if name not in plan_names:
                    r.error(
                        (*upath, "plans", k),
                        f"there is no plan '{name}'" + did_you_mean(name, plan_names),
                    )
                elif unit is not None:
                    uses.append(
                        _Use(
                            unit, manifest.plans[plan_index[name]], plan_index[name], ns.name, upath
                        )
                    )
            if not entry.plans and unit is not None:
                uses.append(_Use(unit, DEFAULT_PLAN, None, ns.name, upath))
        for j, lb in enumerate(ns.loadbalancers):
            lpath: Path = ("namespaces", i, "loadbalancers", j)
            if lb.ref and lb.ref not in lb_names:
                r.error(
                    (*lpath, "ref"),
                    f"there is no load balancer '{lb.ref}'" + did_you_mean(lb.ref, lb_names),
                )
            if lb.plan is not None and lb.plan not in plan_names:
                r.error(
                    (*lpath, "plan"),
                    f"there is no plan '{lb.plan}'" + did_you_mean(lb.plan, plan_names),
                )
    if manifest.namespaces and all(ns.name != default_namespace for ns in manifest.namespaces):
        r.error(
            ("namespaces",),
            f"the default namespace '{default_namespace}' must be one of the namespaces",
        )
    default = manifest.namespace(default_namespace)
    if default is not None:
        index = manifest.namespaces.index(default)
        listed = {entry.ref for entry in default.units}
        for unit in manifest.units:
            if unit.name and unit.name not in listed:
                r.warn(
                    ("namespaces", index, "units"),
                    f"unit '{unit.name}' is not in the default namespace '{default_namespace}' "
                    "(Nelson refuses a manifest with such a unit)",
                )
    return uses


def _check_uses(r: Reader, manifest: Manifest, uses: list[_Use]) -> None:
    """Each unit against each plan it runs with: ports, alerts and resources it refers to."""
    reported: set[tuple[str, ...]] = set()

    def once(key: tuple[str, ...], path: Path, message: str) -> None:
        if key not in reported:
            reported.add(key)
            r.error(path, message)

    for use in uses:
        unit, plan, index = use.unit, use.plan, use.plan_index
        ppath: Path = ("plans", index) if index is not None else use.entry_path
        for j, check in enumerate(plan.health_checks):
            if check.port_reference and unit.port(check.port_reference) is None:
                once(
                    ("port", plan.name, unit.name, check.port_reference),
                    (*ppath, "health_checks", j, "port_reference"),
                    f"unit '{unit.name}' uses this plan but has no port labelled "
                    f"'{check.port_reference}'",
                )
        alerts = {a.name for a in unit.alerting.alerts} if unit.alerting else set()
        alerts |= {snake_case(a) for a in alerts}
        for j, opt_out in enumerate(plan.alert_opt_outs):
            if opt_out not in alerts:
                once(
                    ("alert", plan.name, unit.name, opt_out),
                    (*ppath, "alert_opt_outs", j),
                    f"unit '{unit.name}' uses this plan but defines no alert '{opt_out}'",
                )
        for resource in unit.resources:
            if plan.resource_uri(resource.name) is not None:
                continue
            if index is None:
                once(
                    ("resource", "", unit.name, use.namespace, resource.name),
                    (*use.entry_path, "plans"),
                    f"unit '{unit.name}' needs a uri for its resource '{resource.name}', but "
                    f"names no plan in namespace '{use.namespace}' to give one: name a plan "
                    f"whose resources give ref: {resource.name} a uri",
                )
            else:
                once(
                    ("resource", plan.name, unit.name, resource.name),
                    (*ppath, "resources"),
                    f"unit '{unit.name}' uses this plan and declares resource "
                    f"'{resource.name}': give it a uri here (ref: {resource.name})",
                )
    users: dict[int, set[str]] = {}
    for use in uses:
        if use.plan_index is not None:
            users.setdefault(use.plan_index, set()).update(use.unit.resource_names)
    for i, plan in enumerate(manifest.plans):
        if i not in users:
            continue
        for j, given in enumerate(plan.resources):
            if given.ref and given.ref not in users[i]:
                r.warn(
                    ("plans", i, "resources", j, "ref"),
                    f"no unit that uses this plan declares a resource '{given.ref}'",
                )


def _check_dependencies(r: Reader, manifest: Manifest) -> None:
    local = {u.name: u for u in manifest.units}
    for i, unit in enumerate(manifest.units):
        for j, dep in enumerate(unit.dependencies):
            if dep.unit not in local or dep.unit == unit.name:
                continue  # a unit of another repository: checked when deploying
            for ns in manifest.namespaces_of(unit.name):
                if ns not in manifest.namespaces_of(dep.unit):
                    r.error(
                        ("units", i, "dependencies", j, "ref"),
                        f"'{unit.name}' is deployed into namespace '{ns}' but its dependency "
                        f"'{dep.unit}' is not",
                    )
    edges = {
        u.name: [d.unit for d in u.dependencies if d.unit in local and d.unit != u.name]
        for u in manifest.units
    }
    reported: set[frozenset[str]] = set()
    for start in edges:
        cycle = _cycle_from(start, edges)
        if cycle and frozenset(cycle) not in reported:
            reported.add(frozenset(cycle))
            index = next(i for i, u in enumerate(manifest.units) if u.name == cycle[0])
            r.error(
                ("units", index, "dependencies"),
                "dependency cycle: " + " -> ".join([*cycle, cycle[0]]),
            )


def _cycle_from(start: str, edges: dict[str, list[str]]) -> list[str] | None:
    """A cycle through `start`, found by an iterative depth-first walk."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in edges.get(node, ()):
            if nxt == start:
                return path
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def _check_loadbalancers(r: Reader, manifest: Manifest) -> None:
    unit_names = [u.name for u in manifest.units]
    for i, lb in enumerate(manifest.loadbalancers):
        for j, route in enumerate(lb.routes):
            unit = manifest.unit(route.unit)
            rpath: Path = ("loadbalancers", i, "routes", j, "destination")
            if unit is None:
                r.error(
                    rpath, f"there is no unit '{route.unit}'" + did_you_mean(route.unit, unit_names)
                )
            elif unit.port(route.unit_port) is None:
                r.error(rpath, f"unit '{route.unit}' has no port labelled '{route.unit_port}'")
        targets = list(dict.fromkeys(route.unit for route in lb.routes))
        if len(targets) > 1:
            r.error(
                ("loadbalancers", i, "routes"),
                f"all routes of load balancer '{lb.name}' must go to one unit; they go to "
                + ", ".join(targets),
            )
