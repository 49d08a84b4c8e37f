"""Reading and validating a `.nelson.yml`: every problem is reported at once, with where it
is (a path like `plans[2].health_checks[0].path` and the YAML line and column) and why."""

from __future__ import annotations

import difflib
import re
from typing import Any

import yaml
from croniter import croniter

from domain.manifest.model import (
    Alert,
    Alerting,
    DatacenterFilter,
    Dependency,
    HealthCheck,
    Loadbalancer,
    Manifest,
    ManifestError,
    ManifestInvalid,
    Namespace,
    NamespaceUnit,
    Notifications,
    Plan,
    PlanResource,
    Port,
    Route,
    Schedule,
    TrafficShift,
    Unit,
)

Path = tuple[str | int, ...]

UNIT_NAME_MAX = 40
META_MAX = 14
PROTOCOLS = ("http", "https", "tcp")
POLICIES = (
    "retain-active",
    "retain-latest",
    "retain-latest-two-major",
    "retain-latest-two-feature",
    "retain-always",
    "retain-until-deprecated",
)
NAMED_SCHEDULES = {
    "monthly": "0 0 1 * *",
    "daily": "0 0 * * *",
    "hourly": "0 * * * *",
    "quarter-hourly": "*/15 * * * *",
    "once": "",
}
_DNS_NAME = re.compile(r"^[a-z](?:[a-z0-9]|-(?!-))*[a-z0-9]$|^[a-z]$")
_META = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
_PORT = re.compile(r"^([a-z][a-z0-9-]*)->(\d+)/([a-z]+)$")
_DEP = re.compile(r"^([a-z][a-z0-9-]*)@(\d+)\.(\d+)$")
_ENV = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_TOP = ("units", "plans", "namespaces", "datacenters", "loadbalancers", "notifications")


def format_path(path: Path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def format_errors(errors: tuple[ManifestError, ...] | list[ManifestError]) -> list[str]:
    return [str(e) for e in errors]


def parse_duration(value: Any) -> int | None:
    """Seconds from `10s`, `1m30s`, `2h`, `500ms` (rounded up) or a bare number; None if bad."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.isdigit():
        return int(text)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    seconds = sum(int(n) * _DURATION_UNITS[u] for n, u in parts)
    return max(int(seconds + 0.999), 1 if seconds > 0 else 0)


class _Reader:
    """Holds the document, the YAML positions of its nodes, and the errors found so far."""

    def __init__(self, marks: dict[Path, tuple[int, int]]) -> None:
        self.marks = marks
        self.errors: list[ManifestError] = []

    def error(self, path: Path, message: str) -> None:
        probe = path
        while probe not in self.marks and probe:
            probe = probe[:-1]
        line, column = self.marks.get(probe, (None, None))
        self.errors.append(ManifestError(format_path(path), message, line, column))

    def mapping(
        self, value: Any, path: Path, keys: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.error(
                path, f"expected a mapping with keys {', '.join(keys)}, found {_kind(value)}"
            )
            return None
        for key in value:
            if key not in keys:
                close = difflib.get_close_matches(str(key), keys, n=1)
                hint = (
                    f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(keys)}"
                )
                self.error((*path, str(key)), f"unknown key '{key}'{hint}")
        for key in required:
            if value.get(key) in (None, ""):
                self.error((*path, key), f"'{key}' is required")
        return value

    def sequence(self, value: Any, path: Path) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(path, f"expected a list, found {_kind(value)}")
            return []
        return value

    def text(self, value: Any, path: Path, default: str = "") -> str:
        if value is None:
            return default
        if isinstance(value, bool | dict | list):
            self.error(path, f"expected text, found {_kind(value)}")
            return default
        return str(value)

    def number(self, value: Any, path: Path, default: float, what: str) -> float:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(path, f"{what} must be a number, found {_kind(value)}")
            return default
        if value <= 0:
            self.error(path, f"{what} must be greater than 0, found {value}")
        return float(value)

    def duration(self, value: Any, path: Path, default: int) -> int:
        if value is None:
            return default
        seconds = parse_duration(value)
        if seconds is None:
            self.error(path, f"'{value}' is not a duration; write it like 10s, 5m or 2h")
            return default
        if seconds <= 0:
            self.error(path, "the duration must be longer than zero")
        return seconds


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "text", bool: "true/false"}.get(
        type(value), f"a {type(value).__name__}"
    )


# A manifest is a few hundred values; aliases can make a small text expand without bound, and
# a pasted manifest must not be able to stall the bot.
MAX_NODES = 50_000
MAX_DEPTH = 64


def _too_complex(why: str) -> ManifestInvalid:
    return ManifestInvalid((ManifestError("", f"the manifest is too complex: {why}", 1, 1),))


def _marks(root: yaml.Node) -> dict[Path, tuple[int, int]]:
    """Where each path starts in the text, walking aliases as expanded, within MAX_NODES."""
    out: dict[Path, tuple[int, int]] = {}
    todo: list[tuple[yaml.Node, Path]] = [(root, ())]
    visited = 0
    while todo:
        node, path = todo.pop()
        visited += 1
        if visited > MAX_NODES:
            raise _too_complex(
                f"it expands to more than {MAX_NODES:,} values (check its anchors and aliases)"
            )
        if len(path) > MAX_DEPTH:
            raise _too_complex(f"it is nested more than {MAX_DEPTH} levels deep")
        out.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    child = (*path, key.value)
                    out[child] = (key.start_mark.line + 1, key.start_mark.column + 1)
                    todo.append((value, child))
        elif isinstance(node, yaml.SequenceNode):
            todo.extend((item, (*path, i)) for i, item in enumerate(node.value))
    return out


def _load(text: str) -> tuple[Any, dict[Path, tuple[int, int]]]:
    try:
        # Compose first: aliases stay shared nodes, so the size check runs before anything
        # builds the expanded values.
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        marks = _marks(node) if node is not None else {}
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        message = f"not valid YAML: {problem}" + (f" ({context})" if context else "")
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        raise ManifestInvalid((ManifestError("", message, line, column),)) from None
    except RecursionError:
        raise _too_complex(f"it is nested more than {MAX_DEPTH} levels deep") from None
    return data, marks


def parse_manifest(text: str, *, default_namespace: str = "dev") -> Manifest:
    data, marks = _load(text)
    r = _Reader(marks)
    if data is None:
        raise ManifestInvalid((ManifestError("", "the manifest is empty", 1, 1),))
    top = r.mapping(data, (), _TOP, required=("units", "namespaces"))
    if top is None:
        raise ManifestInvalid(tuple(r.errors))
    units = tuple(
        _unit(r, u, ("units", i)) for i, u in enumerate(r.sequence(top.get("units"), ("units",)))
    )
    plans = tuple(
        _plan(r, p, ("plans", i)) for i, p in enumerate(r.sequence(top.get("plans"), ("plans",)))
    )
    namespaces = tuple(
        _namespace(r, n, ("namespaces", i))
        for i, n in enumerate(r.sequence(top.get("namespaces"), ("namespaces",)))
    )
    manifest = Manifest(
        units=units,
        plans=plans,
        namespaces=namespaces,
        datacenters=_datacenters(r, top.get("datacenters")),
        loadbalancers=tuple(
            _loadbalancer(r, lb, ("loadbalancers", i))
            for i, lb in enumerate(r.sequence(top.get("loadbalancers"), ("loadbalancers",)))
        ),
        notifications=_notifications(r, top.get("notifications")),
    )
    _cross_check(r, manifest, default_namespace)
    if r.errors:
        raise ManifestInvalid(tuple(r.errors))
    return manifest


# -- stanzas ------------------------------------------------------------------------------------


def _unique(r: _Reader, names: list[tuple[str, Path]], what: str) -> None:
    seen: dict[str, Path] = {}
    for name, path in names:
        if name in seen:
            r.error(path, f"{what} '{name}' is declared twice (first at {format_path(seen[name])})")
        else:
            seen[name] = path


def _unit(r: _Reader, raw: Any, path: Path) -> Unit:
    keys = (
        "name",
        "description",
        "workflow",
        "ports",
        "dependencies",
        "resources",
        "meta",
        "alerting",
    )
    m = r.mapping(raw, path, keys, required=("name",)) or {}
    name = r.text(m.get("name"), (*path, "name"))
    if name and not _DNS_NAME.match(name):
        r.error(
            (*path, "name"),
            f"'{name}' is not a valid unit name: use lower-case letters, "
            "digits and single hyphens, starting with a letter",
        )
    elif len(name) > UNIT_NAME_MAX:
        r.error((*path, "name"), f"'{name}' is longer than {UNIT_NAME_MAX} characters")
    ports = []
    for i, raw_port in enumerate(r.sequence(m.get("ports"), (*path, "ports"))):
        ppath = (*path, "ports", i)
        match = _PORT.match(str(raw_port)) if isinstance(raw_port, str) else None
        if match is None:
            r.error(
                ppath,
                f"'{raw_port}' is not a port; write it as label->port/protocol, "
                "like default->8080/http",
            )
            continue
        label, number, protocol = match.group(1), int(match.group(2)), match.group(3)
        if not 1 <= number <= 65535:
            r.error(ppath, f"port {number} is out of range (1-65535)")
        if protocol not in PROTOCOLS:
            r.error(ppath, f"protocol '{protocol}' is not one of {', '.join(PROTOCOLS)}")
        ports.append(Port(label, number, protocol))
    _unique(r, [(p.label, (*path, "ports", i)) for i, p in enumerate(ports)], "port label")
    _unique(r, [(str(p.number), (*path, "ports", i)) for i, p in enumerate(ports)], "port number")
    if ports and not any(p.label == "default" for p in ports):
        r.error(
            (*path, "ports"), "one port must be labelled 'default' (the one traffic is routed to)"
        )
    dependencies = []
    for i, raw_dep in enumerate(r.sequence(m.get("dependencies"), (*path, "dependencies"))):
        dpath = (*path, "dependencies", i)
        dm = r.mapping(raw_dep, dpath, ("ref",), required=("ref",))
        ref = r.text(dm.get("ref"), (*path, "dependencies", i, "ref")) if dm else ""
        match = _DEP.match(ref)
        if dm is not None and ref and match is None:
            r.error(
                (*dpath, "ref"),
                f"'{ref}' is not a dependency; write it as unit@MAJOR.MINOR, like accounts@1.2",
            )
        elif match is not None:
            if match.group(1) == name:
                r.error((*dpath, "ref"), f"unit '{name}' cannot depend on itself")
            dependencies.append(
                Dependency(match.group(1), int(match.group(2)), int(match.group(3)))
            )
    meta = []
    for i, tag in enumerate(r.sequence(m.get("meta"), (*path, "meta"))):
        text = r.text(tag, (*path, "meta", i))
        if len(text) > META_MAX or not _META.match(text):
            r.error(
                (*path, "meta", i),
                f"meta tag '{text}' must be at most {META_MAX} lower-case "
                "letters, digits and hyphens",
            )
        meta.append(text)
    resources = tuple(
        r.text(res.get("name") if isinstance(res, dict) else res, (*path, "resources", i))
        for i, res in enumerate(r.sequence(m.get("resources"), (*path, "resources")))
    )
    return Unit(
        name=name,
        description=r.text(m.get("description"), (*path, "description")),
        workflow=r.text(m.get("workflow"), (*path, "workflow"), "default"),
        ports=tuple(ports),
        dependencies=tuple(dependencies),
        resources=resources,
        meta=tuple(meta),
        alerting=_alerting(r, m.get("alerting"), (*path, "alerting")),
    )


def _alerting(r: _Reader, raw: Any, path: Path) -> Alerting | None:
    if raw is None:
        return None
    m = r.mapping(raw, path, ("prometheus",)) or {}
    prom = r.mapping(m.get("prometheus") or {}, (*path, "prometheus"), ("alerts", "rules")) or {}
    found: dict[str, list[Alert]] = {"alerts": [], "rules": []}
    for kind, key in (("alerts", "alert"), ("rules", "rule")):
        for i, raw_alert in enumerate(r.sequence(prom.get(kind), (*path, "prometheus", kind))):
            apath = (*path, "prometheus", kind, i)
            am = r.mapping(raw_alert, apath, (key, "expression"), required=(key, "expression"))
            if am:
                found[kind].append(
                    Alert(
                        r.text(am.get(key), (*apath, key)),
                        r.text(am.get("expression"), (*apath, "expression")),
                    )
                )
        _unique(
            r, [(a.name, (*path, "prometheus", kind, i)) for i, a in enumerate(found[kind])], key
        )
    return Alerting(tuple(found["alerts"]), tuple(found["rules"]))


def _plan(r: _Reader, raw: Any, path: Path) -> Plan:
    keys = (
        "name",
        "cpu",
        "memory",
        "cpu_request",
        "memory_request",
        "instances",
        "environment",
        "health_checks",
        "traffic_shift",
        "expiration_policy",
        "schedule",
        "resources",
        "alert_opt_outs",
        "constraints",
        "volumes",
        "ephemeral_disk",
        "workflow",
        "blueprint",
    )
    m = r.mapping(raw, path, keys, required=("name",)) or {}
    name = r.text(m.get("name"), (*path, "name"))
    cpu = r.number(m.get("cpu"), (*path, "cpu"), 0.5, "cpu")
    memory = r.number(m.get("memory"), (*path, "memory"), 512, "memory (MB)")
    cpu_request = (
        r.number(m.get("cpu_request"), (*path, "cpu_request"), 0, "cpu_request")
        if m.get("cpu_request") is not None
        else None
    )
    memory_request = (
        r.number(m.get("memory_request"), (*path, "memory_request"), 0, "memory_request")
        if m.get("memory_request") is not None
        else None
    )
    for req, limit, key, lkey in (
        (cpu_request, cpu, "cpu_request", "cpu"),
        (memory_request, memory, "memory_request", "memory"),
    ):
        if req is not None:
            if m.get(lkey) is None:
                r.error((*path, key), f"{key} needs a {lkey} limit as well")
            elif req > limit:
                r.error((*path, key), f"{key} ({req:g}) must not exceed {lkey} ({limit:g})")
    instances = 1
    if m.get("instances") is not None:
        im = r.mapping(m["instances"], (*path, "instances"), ("desired",)) or {}
        desired = im.get("desired", 1)
        if isinstance(desired, bool) or not isinstance(desired, int) or desired <= 0:
            r.error(
                (*path, "instances", "desired"),
                f"desired instances must be a whole number greater than 0, found {desired!r}",
            )
        else:
            instances = desired
    environment = []
    for i, item in enumerate(r.sequence(m.get("environment"), (*path, "environment"))):
        match = _ENV.match(item) if isinstance(item, str) else None
        if match is None:
            r.error(
                (*path, "environment", i),
                f"'{item}' is not an environment entry; write "
                "KEY=value with KEY of letters, digits and underscores",
            )
        else:
            environment.append((match.group(1), match.group(2)))
    checks = tuple(
        _health_check(r, hc, (*path, "health_checks", i))
        for i, hc in enumerate(r.sequence(m.get("health_checks"), (*path, "health_checks")))
    )
    _unique(
        r, [(c.name, (*path, "health_checks", i)) for i, c in enumerate(checks)], "health check"
    )
    shift = None
    if m.get("traffic_shift") is not None:
        tpath = (*path, "traffic_shift")
        tm = r.mapping(m["traffic_shift"], tpath, ("policy", "duration"), ("policy", "duration"))
        if tm:
            policy = r.text(tm.get("policy"), (*tpath, "policy"))
            if policy and policy not in ("linear", "atomic"):
                r.error(
                    (*tpath, "policy"), f"traffic shift policy '{policy}' is not linear or atomic"
                )
            shift = TrafficShift(policy, r.duration(tm.get("duration"), (*tpath, "duration"), 600))
    policy_name = None
    if m.get("expiration_policy") is not None:
        policy_name = r.text(m["expiration_policy"], (*path, "expiration_policy"))
        if policy_name not in POLICIES:
            close = difflib.get_close_matches(policy_name, POLICIES, n=1)
            r.error(
                (*path, "expiration_policy"),
                f"'{policy_name}' is not an expiration policy"
                + (f"; did you mean '{close[0]}'?" if close else f" ({', '.join(POLICIES)})"),
            )
    schedule = _schedule(r, m.get("schedule"), (*path, "schedule"))
    if schedule is not None and shift is not None:
        r.error(
            (*path, "traffic_shift"),
            "a plan with a schedule runs a job, and jobs take no "
            "traffic: remove traffic_shift or the schedule",
        )
    resources = []
    for i, res in enumerate(r.sequence(m.get("resources"), (*path, "resources"))):
        rm = r.mapping(res, (*path, "resources", i), ("ref", "uri"), required=("ref", "uri"))
        if rm:
            resources.append(
                PlanResource(
                    r.text(rm.get("ref"), (*path, "resources", i, "ref")),
                    r.text(rm.get("uri"), (*path, "resources", i, "uri")),
                )
            )
    opt_outs = tuple(
        r.text(o, (*path, "alert_opt_outs", i))
        for i, o in enumerate(r.sequence(m.get("alert_opt_outs"), (*path, "alert_opt_outs")))
    )
    return Plan(
        name,
        cpu,
        int(memory),
        cpu_request,
        int(memory_request) if memory_request is not None else None,
        instances,
        tuple(environment),
        checks,
        shift,
        policy_name,
        schedule,
        tuple(resources),
        opt_outs,
        r.text(m.get("blueprint"), (*path, "blueprint")) or None,
    )


def _health_check(r: _Reader, raw: Any, path: Path) -> HealthCheck:
    keys = ("name", "port_reference", "protocol", "path", "timeout", "interval")
    m = r.mapping(raw, path, keys, required=("name", "port_reference", "protocol")) or {}
    protocol = r.text(m.get("protocol"), (*path, "protocol"))
    if protocol and protocol not in PROTOCOLS:
        r.error((*path, "protocol"), f"protocol '{protocol}' is not one of {', '.join(PROTOCOLS)}")
    check_path = r.text(m.get("path"), (*path, "path")) or None
    if protocol in ("http", "https") and not check_path:
        r.error((*path, "path"), f"an {protocol} health check needs a path, like /health")
    return HealthCheck(
        name=r.text(m.get("name"), (*path, "name")),
        port_reference=r.text(m.get("port_reference"), (*path, "port_reference")),
        protocol=protocol,
        path=check_path,
        timeout_seconds=r.duration(m.get("timeout"), (*path, "timeout"), 10),
        interval_seconds=r.duration(m.get("interval"), (*path, "interval"), 10),
    )


def _schedule(r: _Reader, raw: Any, path: Path) -> Schedule | None:
    if raw is None:
        return None
    text = r.text(raw, path).strip()
    if text in NAMED_SCHEDULES:
        return Schedule(text, NAMED_SCHEDULES[text])
    if len(text.split()) == 5 and croniter.is_valid(text):
        return Schedule("cron", text)
    r.error(
        path,
        f"'{text}' is not a schedule: use monthly, daily, hourly, quarter-hourly, once "
        "or a five-field cron expression like '30 2 * * *'",
    )
    return None


def _namespace(r: _Reader, raw: Any, path: Path) -> Namespace:
    m = r.mapping(raw, path, ("name", "units"), required=("name", "units")) or {}
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
    return Namespace(r.text(m.get("name"), (*path, "name")), tuple(entries))


def _datacenters(r: _Reader, raw: Any) -> DatacenterFilter:
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
        r.error(("datacenters",), "give either 'only' or 'except', not both")
    return DatacenterFilter(only, except_)


def _loadbalancer(r: _Reader, raw: Any, path: Path) -> Loadbalancer:
    m = r.mapping(raw, path, ("name", "routes"), required=("name",)) or {}
    routes = []
    for i, raw_route in enumerate(r.sequence(m.get("routes"), (*path, "routes"))):
        rpath = (*path, "routes", i)
        rm = r.mapping(
            raw_route,
            rpath,
            ("name", "expose", "destination"),
            required=("name", "expose", "destination"),
        )
        if not rm:
            continue
        expose = _PORT.match(r.text(rm.get("expose"), (*rpath, "expose")))
        destination = r.text(rm.get("destination"), (*rpath, "destination"))
        unit, arrow, port_label = destination.partition("->")
        if expose is None:
            r.error(
                (*rpath, "expose"), "write expose as label->port/protocol, like default->8444/http"
            )
        if not arrow or not unit or not port_label:
            r.error(
                (*rpath, "destination"),
                "write destination as unit->port-label, like howdy-http->default",
            )
        if expose is not None and arrow:
            routes.append(
                Route(
                    r.text(rm.get("name"), (*rpath, "name")),
                    expose.group(1),
                    int(expose.group(2)),
                    expose.group(3),
                    unit,
                    port_label,
                )
            )
    return Loadbalancer(r.text(m.get("name"), (*path, "name")), tuple(routes))


def _notifications(r: _Reader, raw: Any) -> Notifications:
    if raw is None:
        return Notifications()
    path: Path = ("notifications",)
    m = r.mapping(raw, path, ("slack", "email")) or {}
    channels = []
    for i, item in enumerate(r.sequence(m.get("slack"), (*path, "slack"))):
        cm = r.mapping(item, (*path, "slack", i), ("channel",), required=("channel",))
        if cm and cm.get("channel"):
            channels.append(r.text(cm["channel"], (*path, "slack", i, "channel")).lstrip("#"))
    emails = []
    for i, item in enumerate(r.sequence(m.get("email"), (*path, "email"))):
        em = r.mapping(item, (*path, "email", i), ("recipient",), required=("recipient",))
        if em and em.get("recipient"):
            address = r.text(em["recipient"], (*path, "email", i, "recipient"))
            if not _EMAIL.match(address):
                r.error((*path, "email", i, "recipient"), f"'{address}' is not an e-mail address")
            emails.append(address)
    return Notifications(tuple(channels), tuple(emails))


# -- cross-checks -------------------------------------------------------------------------------


def _cross_check(r: _Reader, manifest: Manifest, default_namespace: str) -> None:
    _unique(
        r, [(u.name, ("units", i, "name")) for i, u in enumerate(manifest.units) if u.name], "unit"
    )
    _unique(
        r, [(p.name, ("plans", i, "name")) for i, p in enumerate(manifest.plans) if p.name], "plan"
    )
    _unique(
        r,
        [(n.name, ("namespaces", i, "name")) for i, n in enumerate(manifest.namespaces) if n.name],
        "namespace",
    )
    unit_names = [u.name for u in manifest.units]
    plan_names = [p.name for p in manifest.plans]
    users_of_plan: dict[str, set[str]] = {}
    for i, ns in enumerate(manifest.namespaces):
        for j, entry in enumerate(ns.units):
            upath: Path = ("namespaces", i, "units", j)
            if entry.ref and entry.ref not in unit_names:
                r.error(
                    (*upath, "ref"),
                    f"there is no unit '{entry.ref}'" + _close(entry.ref, unit_names),
                )
            if not entry.plans:
                r.error(
                    (*upath, "plans"),
                    f"unit '{entry.ref}' needs at least one plan in namespace '{ns.name}'",
                )
            for k, plan in enumerate(entry.plans):
                if plan not in plan_names:
                    r.error(
                        (*upath, "plans", k),
                        f"there is no plan '{plan}'" + _close(plan, plan_names),
                    )
                users_of_plan.setdefault(plan, set()).add(entry.ref)
    if manifest.namespaces and all(ns.name != default_namespace for ns in manifest.namespaces):
        r.error(
            ("namespaces",),
            f"the default namespace '{default_namespace}' must be one of the namespaces",
        )
    _check_plan_references(r, manifest, users_of_plan)
    _check_dependencies(r, manifest)
    for i, lb in enumerate(manifest.loadbalancers):
        for j, route in enumerate(lb.routes):
            unit = manifest.unit(route.unit)
            rpath: Path = ("loadbalancers", i, "routes", j, "destination")
            if unit is None:
                r.error(rpath, f"there is no unit '{route.unit}'" + _close(route.unit, unit_names))
            elif unit.port(route.unit_port) is None:
                r.error(rpath, f"unit '{route.unit}' has no port labelled '{route.unit_port}'")


def _check_plan_references(r: _Reader, manifest: Manifest, users: dict[str, set[str]]) -> None:
    for i, plan in enumerate(manifest.plans):
        units = [u for name in sorted(users.get(plan.name, ())) if (u := manifest.unit(name))]
        for j, check in enumerate(plan.health_checks):
            for unit in units:
                if check.port_reference and unit.port(check.port_reference) is None:
                    r.error(
                        ("plans", i, "health_checks", j, "port_reference"),
                        f"unit '{unit.name}' uses this plan but has no port labelled "
                        f"'{check.port_reference}'",
                    )
        for j, opt_out in enumerate(plan.alert_opt_outs):
            for unit in units:
                alerts = {a.name for a in unit.alerting.alerts} if unit.alerting else set()
                if opt_out not in alerts:
                    r.error(
                        ("plans", i, "alert_opt_outs", j),
                        f"unit '{unit.name}' uses this plan but defines no alert '{opt_out}'",
                    )
        for j, resource in enumerate(plan.resources):
            for unit in units:
                if resource.ref not in unit.resources:
                    r.error(
                        ("plans", i, "resources", j, "ref"),
                        f"unit '{unit.name}' uses this plan but declares no resource "
                        f"'{resource.ref}'",
                    )


def _check_dependencies(r: _Reader, manifest: Manifest) -> None:
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
    # cycles among this manifest's units
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


def _close(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""
