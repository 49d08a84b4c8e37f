"""Reading and validating a `.nelson.yml`: every problem is reported at once, with where it
is (a path like `plans[2].health_checks[0].path` and the YAML line and column) and why.

Manifests written for Nelson are read as Nelson reads them; docs/manifest.md lists the rules
and the few deliberate differences.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from domain.durations import parse_duration
from domain.manifest.cross_checks import cross_check
from domain.manifest.model import (
    Alert,
    Alerting,
    DatacenterFilter,
    Dependency,
    Loadbalancer,
    Manifest,
    ManifestError,
    ManifestInvalid,
    Namespace,
    NamespaceLoadbalancer,
    NamespaceUnit,
    Notifications,
    Port,
    Resource,
    Route,
    Unit,
)
from domain.manifest.plans import PLAN_KEYS, plan, unique
from domain.manifest.reader import Path, Reader, did_you_mean, format_path, kind, load
from domain.manifest.values import (
    ALNUM_HYPHEN,
    DEPENDENCY,
    DESTINATION,
    EMAIL,
    LOADBALANCER_NAME_MAX,
    META_MAX,
    NAMESPACE,
    PORT,
    PORT_PROTOCOLS,
    UNIT_NAME,
    UNIT_NAME_MAX,
    snake_case,
)

_TOP = ("units", "plans", "namespaces", "datacenters", "loadbalancers", "notifications")

__all__ = ["format_errors", "format_path", "parse_duration", "parse_manifest"]


def format_errors(errors: tuple[ManifestError, ...] | list[ManifestError]) -> list[str]:
    return [str(e) for e in errors]


def parse_manifest(text: str, *, default_namespace: str = "dev") -> Manifest:
    data, marks = load(text)
    r = Reader(marks)
    if data is None:
        raise ManifestInvalid((ManifestError("", "the manifest is empty", 1, 1),))
    if not isinstance(data, dict):
        raise ManifestInvalid((ManifestError("", _not_a_mapping(data), 1, 1),))
    _top_level_keys(r, data)
    units = tuple(
        _unit(r, u, ("units", i)) for i, u in enumerate(r.sequence(data.get("units"), ("units",)))
    )
    plans = tuple(
        plan(r, p, ("plans", i)) for i, p in enumerate(r.sequence(data.get("plans"), ("plans",)))
    )
    namespaces = tuple(
        _namespace(r, n, ("namespaces", i))
        for i, n in enumerate(r.sequence(data.get("namespaces"), ("namespaces",)))
    )
    manifest = Manifest(
        units=units,
        plans=plans,
        namespaces=namespaces,
        datacenters=_datacenters(r, data.get("datacenters")),
        loadbalancers=tuple(
            _loadbalancer(r, lb, ("loadbalancers", i))
            for i, lb in enumerate(r.sequence(data.get("loadbalancers"), ("loadbalancers",)))
        ),
        notifications=_notifications(r, data.get("notifications")),
    )
    cross_check(r, manifest, default_namespace)
    if r.errors:
        raise ManifestInvalid(tuple(r.errors), tuple(r.warnings))
    return replace(manifest, warnings=tuple(r.warnings))


def _not_a_mapping(data: Any) -> str:
    return f"expected a mapping with keys {', '.join(_TOP)}, found {kind(data)}"


def _top_level_keys(r: Reader, data: dict[Any, Any]) -> None:
    # Nelson ignores top-level keys it does not know, and its users keep YAML anchors in
    # them (`common: &defaults ...`): a warning, not an error.
    for key in data:
        if key not in _TOP:
            hint = did_you_mean(str(key), _TOP) or " (fine if it only holds anchors)"
            r.warn((str(key),), f"unknown top-level key '{key}' is ignored{hint}")
    for key in ("units", "namespaces"):
        if data.get(key) is None:
            r.error((key,), f"'{key}' is required")


# -- units --------------------------------------------------------------------------------------

_UNIT_KEYS = (
    "name",
    "description",
    "workflow",
    "ports",
    "dependencies",
    "resources",
    "meta",
    "alerting",
)


def _unit(r: Reader, raw: Any, path: Path) -> Unit:
    m = r.mapping(raw, path, _UNIT_KEYS, ("name",), ((PLAN_KEYS, "it belongs in a plan"),)) or {}
    name = r.text(m.get("name"), (*path, "name"))
    if name and not UNIT_NAME.match(name):
        r.error(
            (*path, "name"),
            f"'{name}' is not a valid unit name: use lower-case letters, "
            "digits and single hyphens, starting with a letter",
        )
    elif len(name) > UNIT_NAME_MAX:
        r.error((*path, "name"), f"'{name}' is longer than {UNIT_NAME_MAX} characters")
    if m and m.get("description") in (None, ""):
        r.warn((*path, "description"), "no description (Nelson refuses a unit without one)")
    for key in ("dependencies", "resources", "meta"):
        if key in m and m[key] is None:
            r.error((*path, key), f"'{key}' is empty: list at least one, or remove the key")
    return Unit(
        name=name,
        description=r.text(m.get("description"), (*path, "description")).strip(),
        workflow=r.text(m.get("workflow"), (*path, "workflow"), "default"),
        ports=_ports(r, m.get("ports"), (*path, "ports")),
        dependencies=_dependencies(r, name, m.get("dependencies"), (*path, "dependencies")),
        resources=_unit_resources(r, m.get("resources"), (*path, "resources")),
        meta=_meta(r, m.get("meta"), (*path, "meta")),
        alerting=_alerting(r, m.get("alerting"), (*path, "alerting")),
    )


def _ports(r: Reader, raw: Any, path: Path) -> tuple[Port, ...]:
    ports = []
    for i, raw_port in enumerate(r.sequence(raw, path)):
        match = PORT.match(raw_port) if isinstance(raw_port, str) else None
        if match is None:
            r.error(
                (*path, i),
                f"'{raw_port}' is not a port; write it as label->port/protocol, "
                "like default->8080/http",
            )
            continue
        label, number, protocol = match.group(1), int(match.group(2)), match.group(3)
        if not 1 <= number <= 65535:
            r.error((*path, i), f"port {number} is out of range (1-65535)")
        if protocol not in PORT_PROTOCOLS:
            r.error((*path, i), f"protocol '{protocol}' is not one of {', '.join(PORT_PROTOCOLS)}")
        ports.append(Port(label, number, protocol))
    unique(r, [(p.label, (*path, i)) for i, p in enumerate(ports)], "port label")
    unique(r, [(str(p.number), (*path, i)) for i, p in enumerate(ports)], "port number")
    if ports and not any(p.label == "default" for p in ports):
        r.error(path, "one port must be labelled 'default' (the one traffic is routed to)")
    return tuple(ports)


def _dependencies(r: Reader, unit: str, raw: Any, path: Path) -> tuple[Dependency, ...]:
    found = []
    for i, raw_dep in enumerate(r.sequence(raw, path)):
        dm = r.mapping(raw_dep, (*path, i), ("ref",), required=("ref",))
        ref = r.text(dm.get("ref"), (*path, i, "ref")).strip() if dm else ""
        match = DEPENDENCY.match(ref)
        if dm is not None and ref and match is None:
            r.error(
                (*path, i, "ref"),
                f"'{ref}' is not a dependency; write it as unit@MAJOR.MINOR, like accounts@1.2",
            )
        elif match is not None:
            if match.group(1) == unit:
                r.error((*path, i, "ref"), f"unit '{unit}' cannot depend on itself")
            found.append(Dependency(match.group(1), int(match.group(2)), int(match.group(3))))
    return tuple(found)


def _unit_resources(r: Reader, raw: Any, path: Path) -> tuple[Resource, ...]:
    found = []
    for i, item in enumerate(r.sequence(raw, path)):
        if isinstance(item, str):  # a bare name: shorthand for `- name: <it>`
            name, description = item, ""
        else:
            rm = r.mapping(item, (*path, i), ("name", "description"), required=("name",))
            if not rm:
                continue
            name = r.text(rm.get("name"), (*path, i, "name"))
            description = r.text(rm.get("description"), (*path, i, "description")).strip()
        if name and not ALNUM_HYPHEN.match(name):
            r.error((*path, i), f"'{name}' is not a resource name: use letters, digits, hyphens")
        if name:
            found.append(Resource(name, description))
    unique(r, [(res.name, (*path, i)) for i, res in enumerate(found)], "resource")
    return tuple(found)


def _meta(r: Reader, raw: Any, path: Path) -> tuple[str, ...]:
    found = []
    for i, tag in enumerate(r.sequence(raw, path)):
        text = r.text(tag, (*path, i))
        if len(text) > META_MAX or not ALNUM_HYPHEN.match(text):
            r.error(
                (*path, i),
                f"meta tag '{text}' must be 1 to {META_MAX} letters, digits and hyphens",
            )
        found.append(text)
    return tuple(found)


def _alerting(r: Reader, raw: Any, path: Path) -> Alerting | None:
    if raw is None:
        return None
    m = r.mapping(raw, path, ("prometheus",)) or {}
    prom = r.mapping(m.get("prometheus") or {}, (*path, "prometheus"), ("alerts", "rules")) or {}
    found: dict[str, list[Alert]] = {"alerts": [], "rules": []}
    for group, key in (("alerts", "alert"), ("rules", "rule")):
        for i, raw_alert in enumerate(r.sequence(prom.get(group), (*path, "prometheus", group))):
            apath = (*path, "prometheus", group, i)
            am = r.mapping(raw_alert, apath, (key, "expression"), required=(key, "expression"))
            if am:
                found[group].append(
                    Alert(
                        r.text(am.get(key), (*apath, key)),
                        r.text(am.get("expression"), (*apath, "expression")),
                    )
                )
        unique(
            r,
            [
                (snake_case(a.name), (*path, "prometheus", group, i))
                for i, a in enumerate(found[group])
            ],
            key,
        )
    return Alerting(tuple(found["alerts"]), tuple(found["rules"]))


# -- namespaces, load balancers, datacenters, notifications ------------------------------------


def _namespace(r: Reader, raw: Any, path: Path) -> Namespace:
    m = r.mapping(raw, path, ("name", "units", "loadbalancers"), required=("name", "units")) or {}
    name = r.text(m.get("name"), (*path, "name"))
    if name and (not NAMESPACE.match(name) or "//" in name):
        r.error(
            (*path, "name"),
            f"'{name}' is not a namespace name: use lower-case letters and hyphens, "
            "nested with / (like dev or dev/sandbox)",
        )
    entries = []
    for i, raw_unit in enumerate(r.sequence(m.get("units"), (*path, "units"))):
        upath = (*path, "units", i)
        um = r.mapping(raw_unit, upath, ("ref", "plans"), required=("ref",))
        if um is None:
            continue
        plans = tuple(
            r.text(p, (*upath, "plans", j))
            for j, p in enumerate(r.sequence(um.get("plans"), (*upath, "plans")))
        )
        entries.append(NamespaceUnit(r.text(um.get("ref"), (*upath, "ref")), plans))
    balancers = []
    for i, raw_lb in enumerate(r.sequence(m.get("loadbalancers"), (*path, "loadbalancers"))):
        lpath = (*path, "loadbalancers", i)
        lm = r.mapping(raw_lb, lpath, ("ref", "plan"), required=("ref",))
        if lm:
            plan_name = r.text(lm.get("plan"), (*lpath, "plan")) or None
            balancers.append(
                NamespaceLoadbalancer(r.text(lm.get("ref"), (*lpath, "ref")), plan_name)
            )
    return Namespace(name, tuple(entries), tuple(balancers))


def _datacenters(r: Reader, raw: Any) -> DatacenterFilter:
    if raw is None:
        return DatacenterFilter()
    m = r.mapping(raw, ("datacenters",), ("only", "except")) or {}
    only = tuple(
        r.text(d, ("datacenters", "only", i))
        for i, d in enumerate(r.sequence(m.get("only"), ("datacenters", "only")))
    )
    except_ = tuple(
        r.text(d, ("datacenters", "except", i))
        for i, d in enumerate(r.sequence(m.get("except"), ("datacenters", "except")))
    )
    if only and except_:
        r.warn(
            ("datacenters",),
            "both 'only' and 'except' are given: deploys go to the 'only' datacenters minus "
            "the 'except' ones (Nelson would ignore both and deploy everywhere)",
        )
    return DatacenterFilter(only, except_)


def _loadbalancer(r: Reader, raw: Any, path: Path) -> Loadbalancer:
    m = r.mapping(raw, path, ("name", "routes"), required=("name",)) or {}
    name = r.text(m.get("name"), (*path, "name"))
    if name and not ALNUM_HYPHEN.match(name):
        r.error(
            (*path, "name"), f"'{name}' is not a load balancer name: use letters, digits, hyphens"
        )
    elif len(name) > LOADBALANCER_NAME_MAX:
        r.error(
            (*path, "name"),
            f"load balancer name '{name}' is longer than {LOADBALANCER_NAME_MAX} characters",
        )
    routes = []
    raw_routes = r.sequence(m.get("routes"), (*path, "routes"))
    if m and not raw_routes and isinstance(m.get("routes"), list | None):
        r.error((*path, "routes"), "a load balancer needs at least one route")
    for i, raw_route in enumerate(raw_routes):
        rpath = (*path, "routes", i)
        rm = r.mapping(
            raw_route, rpath, ("name", "expose", "destination"), required=("expose", "destination")
        )
        if not rm:
            continue
        expose_text = r.text(rm.get("expose"), (*rpath, "expose"))
        expose = PORT.match(expose_text)
        destination = r.text(rm.get("destination"), (*rpath, "destination"))
        target = DESTINATION.match(destination)
        if expose_text and expose is None:
            r.error(
                (*rpath, "expose"),
                f"'{expose_text}' is not a port; write expose as label->port/protocol, "
                "like default->8444/http",
            )
        elif expose is not None and not 1 <= int(expose.group(2)) <= 65535:
            r.error((*rpath, "expose"), f"port {expose.group(2)} is out of range (1-65535)")
        if destination and target is None:
            r.error(
                (*rpath, "destination"),
                f"'{destination}' is not a destination; write it as unit->port-label, "
                "like howdy-http->default",
            )
        if expose is not None and target is not None:
            routes.append(
                Route(
                    r.text(rm.get("name"), (*rpath, "name")),
                    expose.group(1),
                    int(expose.group(2)),
                    expose.group(3),
                    target.group(1),
                    target.group(2),
                )
            )
    return Loadbalancer(name, tuple(routes))


def _notifications(r: Reader, raw: Any) -> Notifications:
    """Nelson's form, `slack: {channels: [...]}` and `email: {recipients: [...]}`, and the
    older list form, `slack: [{channel: ...}]` and `email: [{recipient: ...}]`."""
    if raw is None:
        return Notifications()
    path: Path = ("notifications",)
    m = r.mapping(raw, path, ("slack", "email")) or {}
    channels = _subscribers(r, m.get("slack"), (*path, "slack"), "channels", "channel")
    emails = _subscribers(r, m.get("email"), (*path, "email"), "recipients", "recipient")
    for address, where in emails:
        if not EMAIL.match(address):
            r.error(where, f"'{address}' is not an e-mail address")
    return Notifications(
        tuple(dict.fromkeys(c.lstrip("#") for c, _ in channels)),
        tuple(dict.fromkeys(a for a, _ in emails)),
    )


def _subscribers(
    r: Reader, raw: Any, path: Path, plural: str, singular: str
) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    if raw is None:
        return found
    if isinstance(raw, dict):
        m = r.mapping(raw, path, (plural,)) or {}
        for i, item in enumerate(r.sequence(m.get(plural), (*path, plural))):
            text = r.text(item, (*path, plural, i)).strip()
            if text:
                found.append((text, (*path, plural, i)))
        return found
    if not isinstance(raw, list):
        r.error(path, f"expected a mapping with key {plural}, found {kind(raw)}")
        return found
    for i, item in enumerate(raw):
        im = r.mapping(item, (*path, i), (singular,), required=(singular,))
        if im and im.get(singular):
            found.append((r.text(im[singular], (*path, i, singular)).strip(), (*path, i, singular)))
    return found
