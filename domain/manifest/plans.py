"""The `plans` stanza: how a unit runs in a namespace."""

from __future__ import annotations

import difflib
import re
from datetime import timedelta
from typing import Any

from croniter import croniter

from domain.durations import whole_seconds
from domain.expiration import ExpirationPolicy
from domain.manifest.model import (
    Constraint,
    HealthCheck,
    Plan,
    PlanResource,
    Schedule,
    TrafficShift,
    Volume,
)
from domain.manifest.reader import Path, Reader, format_path
from domain.manifest.values import (
    ALNUM_HYPHEN,
    CHECK_PROTOCOLS,
    ENVIRONMENT,
    WORKFLOWS,
    blueprint_problem,
    uri_problem,
    without_password,
)
from domain.traffic import DEFAULT_POLICY, ShiftPolicy

POLICIES = tuple(p.value for p in ExpirationPolicy)
NAMED_SCHEDULES = {
    "monthly": "0 0 1 * *",
    "daily": "0 0 * * *",
    "hourly": "0 * * * *",
    "quarter-hourly": "*/15 * * * *",
    "once": "",
}
CPU_BELOW = 100
MEMORY_BELOW = 50_000
INSTANCES_BELOW = 5_000
SHIFT_LONGER_THAN = timedelta(minutes=1)
SHIFT_SHORTER_THAN = timedelta(days=5)
CHECK_TIMEOUT_SECONDS = 2
CHECK_INTERVAL_SECONDS = 10
PLAN_KEYS = (
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
    "retries",
    "constraints",
    "volumes",
    "workflow",
    "blueprint",
)


def plan(r: Reader, raw: Any, path: Path) -> Plan:
    m = r.mapping(raw, path, PLAN_KEYS, required=("name",)) or {}
    name = r.text(m.get("name"), (*path, "name"))
    if name and not ALNUM_HYPHEN.match(name):
        r.error((*path, "name"), f"'{name}' is not a plan name: use letters, digits and hyphens")
    cpu, cpu_request = _limit(r, m, path, "cpu", 0.5, CPU_BELOW, "cpu (cores)")
    memory, memory_request = _limit(r, m, path, "memory", 512, MEMORY_BELOW, "memory (MB)")
    instances = 1
    if m.get("instances") is not None:
        im = r.mapping(m["instances"], (*path, "instances"), ("desired",)) or {}
        if im.get("desired") is not None:
            desired = r.whole(
                im["desired"], (*path, "instances", "desired"), "instances.desired", INSTANCES_BELOW
            )
            instances = desired or instances
    retries = None
    if m.get("retries") is not None:
        retries = r.whole(m["retries"], (*path, "retries"), "retries")
    shift = _traffic_shift(r, m.get("traffic_shift"), (*path, "traffic_shift"))
    schedule = _schedule(r, m.get("schedule"), (*path, "schedule"))
    if schedule is not None and shift is not None:
        r.error(
            (*path, "traffic_shift"),
            "a plan with a schedule runs a job, and jobs take no "
            "traffic: remove traffic_shift or the schedule",
        )
    workflow, blueprint = _workflow(r, m, path)
    return Plan(
        name=name,
        cpu=cpu,
        memory=int(memory),
        cpu_request=cpu_request,
        memory_request=int(memory_request) if memory_request is not None else None,
        instances=instances,
        environment=_environment(r, m.get("environment"), (*path, "environment")),
        health_checks=_health_checks(r, m.get("health_checks"), (*path, "health_checks")),
        traffic_shift=shift,
        expiration_policy=_policy(r, m.get("expiration_policy"), (*path, "expiration_policy")),
        schedule=schedule,
        resources=_resources(r, m.get("resources"), (*path, "resources")),
        alert_opt_outs=tuple(
            r.text(o, (*path, "alert_opt_outs", i))
            for i, o in enumerate(r.sequence(m.get("alert_opt_outs"), (*path, "alert_opt_outs")))
        ),
        retries=retries,
        volumes=_volumes(r, m.get("volumes"), (*path, "volumes")),
        constraints=_constraints(r, m.get("constraints"), (*path, "constraints")),
        workflow=workflow,
        blueprint=blueprint,
    )


def _limit(
    r: Reader, m: dict[str, Any], path: Path, key: str, default: float, below: int, what: str
) -> tuple[float, float | None]:
    """A limit (`cpu`, `memory`) and its optional request (`cpu_request`, `memory_request`)."""
    limit = r.number(m.get(key), (*path, key), default, what)
    if m.get(key) is not None and limit >= below:
        r.error((*path, key), f"{what} must be less than {below:,}, found {limit:g}")
    rkey = f"{key}_request"
    if m.get(rkey) is None:
        return limit, None
    request = r.number(m[rkey], (*path, rkey), 0, rkey)
    if m.get(key) is None:
        r.error((*path, rkey), f"{rkey} needs a {key} limit as well")
    elif request > limit:
        r.error((*path, rkey), f"{rkey} ({request:g}) must not exceed {key} ({limit:g})")
    return limit, request


def _environment(r: Reader, raw: Any, path: Path) -> tuple[tuple[str, str], ...]:
    found = []
    for i, item in enumerate(r.sequence(raw, path)):
        match = ENVIRONMENT.match(item) if isinstance(item, str) else None
        if match is None:
            r.error(
                (*path, i),
                f"'{item}' is not an environment entry; write "
                "KEY=value with KEY of letters, digits and underscores",
            )
        else:
            found.append((match.group(1), match.group(2)))
    return tuple(found)


def _health_checks(r: Reader, raw: Any, path: Path) -> tuple[HealthCheck, ...]:
    checks = tuple(_health_check(r, hc, (*path, i)) for i, hc in enumerate(r.sequence(raw, path)))
    unique(r, [(c.name, (*path, i)) for i, c in enumerate(checks) if c.name], "health check")
    return checks


def _health_check(r: Reader, raw: Any, path: Path) -> HealthCheck:
    keys = ("name", "port_reference", "protocol", "path", "timeout", "interval")
    m = r.mapping(raw, path, keys, required=("name", "port_reference", "protocol")) or {}
    name = r.text(m.get("name"), (*path, "name"))
    if name and not ALNUM_HYPHEN.match(name):
        r.error(
            (*path, "name"), f"'{name}' is not a health check name: use letters, digits, hyphens"
        )
    protocol = r.text(m.get("protocol"), (*path, "protocol"))
    if protocol and protocol not in CHECK_PROTOCOLS:
        r.error(
            (*path, "protocol"), f"protocol '{protocol}' is not one of {', '.join(CHECK_PROTOCOLS)}"
        )
    check_path = r.text(m.get("path"), (*path, "path")) or None
    if protocol in ("http", "https") and not check_path:
        r.error((*path, "path"), f"an {protocol} health check needs a path, like /health")
    return HealthCheck(
        name=name,
        port_reference=r.text(m.get("port_reference"), (*path, "port_reference")),
        protocol=protocol,
        path=check_path,
        timeout_seconds=r.seconds(m.get("timeout"), (*path, "timeout"), CHECK_TIMEOUT_SECONDS),
        interval_seconds=r.seconds(m.get("interval"), (*path, "interval"), CHECK_INTERVAL_SECONDS),
    )


def _traffic_shift(r: Reader, raw: Any, path: Path) -> TrafficShift | None:
    if raw is None:
        return None
    m = r.mapping(raw, path, ("policy", "duration"), ("policy", "duration"))
    if not m:
        return None
    policy = r.text(m.get("policy"), (*path, "policy"))
    if policy not in tuple(ShiftPolicy):
        if policy:  # a missing one is reported as required
            r.error((*path, "policy"), f"traffic shift policy '{policy}' is not linear or atomic")
        policy = DEFAULT_POLICY  # the manifest is refused; this only completes the value
    if m.get("duration") in (None, ""):
        return None
    duration = r.duration(m["duration"], (*path, "duration"))
    if duration is None:
        return None
    if not SHIFT_LONGER_THAN < duration < SHIFT_SHORTER_THAN:
        r.error(
            (*path, "duration"),
            f"a traffic shift must last longer than 1 minute and less than 5 days, "
            f"found '{m['duration']}'",
        )
    return TrafficShift(ShiftPolicy(policy), whole_seconds(duration))


def _policy(r: Reader, raw: Any, path: Path) -> ExpirationPolicy | None:
    if raw is None:
        return None
    name = r.text(raw, path)
    if name not in POLICIES:
        close = difflib.get_close_matches(name, POLICIES, n=1)
        r.error(
            path,
            f"'{name}' is not an expiration policy"
            + (f"; did you mean '{close[0]}'?" if close else f" ({', '.join(POLICIES)})"),
        )
        return None  # the manifest is refused
    return ExpirationPolicy(name)


def _schedule(r: Reader, raw: Any, path: Path) -> Schedule | None:
    if raw is None:
        return None
    text = r.text(raw, path).strip()
    if text.lower() in NAMED_SCHEDULES:
        return Schedule(text.lower(), NAMED_SCHEDULES[text.lower()])
    if len(text.split()) == 5 and croniter.is_valid(text):
        return Schedule("cron", text)
    r.error(
        path,
        f"'{text}' is not a schedule: use monthly, daily, hourly, quarter-hourly, once "
        "or a five-field cron expression like '30 2 * * *'",
    )
    return None


def _resources(r: Reader, raw: Any, path: Path) -> tuple[PlanResource, ...]:
    found = []
    for i, res in enumerate(r.sequence(raw, path)):
        rm = r.mapping(res, (*path, i), ("ref", "uri"), required=("ref", "uri"))
        if not rm:
            continue
        uri = r.text(rm.get("uri"), (*path, i, "uri"))
        problem = uri_problem(uri) if uri else None
        if problem is not None:
            r.error((*path, i, "uri"), f"'{without_password(uri)}' is not a URI: {problem}")
        found.append(PlanResource(r.text(rm.get("ref"), (*path, i, "ref")), uri))
    unique(r, [(res.ref, (*path, i)) for i, res in enumerate(found) if res.ref], "resource")
    return tuple(found)


def _volumes(r: Reader, raw: Any, path: Path) -> tuple[Volume, ...]:
    found = []
    for i, item in enumerate(r.sequence(raw, path)):
        vpath = (*path, i)
        vm = r.mapping(item, vpath, ("name", "mountPath", "size"), ("name", "mountPath", "size"))
        if not vm:
            continue
        name = r.text(vm.get("name"), (*vpath, "name"))
        mount = r.text(vm.get("mountPath"), (*vpath, "mountPath"))
        if mount and (not mount.startswith("/") or "\0" in mount):
            r.error((*vpath, "mountPath"), f"'{mount}' is not an absolute path like /data")
        size = None
        if vm.get("size") is not None:
            size = r.whole(vm["size"], (*vpath, "size"), "size (MB)")
        found.append(Volume(name, mount, size or 0))
    unique(r, [(v.name, (*path, i)) for i, v in enumerate(found) if v.name], "volume")
    unique(r, [(v.mount_path, (*path, i)) for i, v in enumerate(found) if v.mount_path], "mount")
    return tuple(found)


_CONSTRAINT_KEYS = ("unique", "cluster", "groupBy", "like", "unlike")
_CONSTRAINT_KINDS = {"groupBy": "group_by"}


def _constraints(r: Reader, raw: Any, path: Path) -> tuple[Constraint, ...]:
    found: list[Constraint] = []
    for i, item in enumerate(r.sequence(raw, path)):
        cm = r.mapping(item, (*path, i), _CONSTRAINT_KEYS) or {}
        for key in _CONSTRAINT_KEYS:
            kind_name = _CONSTRAINT_KINDS.get(key, key)
            for j, entry in enumerate(r.sequence(cm.get(key), (*path, i, key))):
                epath = (*path, i, key, j)
                if key == "unique":
                    field = r.text(entry, epath)
                    if field:
                        found.append(Constraint(kind_name, field))
                    continue
                required = ("fieldName",) if key == "groupBy" else ("fieldName", "param")
                em = r.mapping(entry, epath, ("fieldName", "param"), required)
                if not em:
                    continue
                field = r.text(em.get("fieldName"), (*epath, "fieldName"))
                param = _constraint_param(r, key, em.get("param"), (*epath, "param"))
                found.append(Constraint(kind_name, field, param))
    return tuple(found)


def _constraint_param(r: Reader, key: str, raw: Any, path: Path) -> str | None:
    if key == "groupBy":
        if raw is None:
            return None
        count = r.whole(raw, path, "groupBy param (instances per value)")
        return str(count) if count is not None else None
    param = r.text(raw, path)
    if key in ("like", "unlike") and param:
        try:
            re.compile(param)
        except re.error as exc:
            r.error(path, f"'{param}' is not a regular expression: {exc}")
    return param


def _workflow(r: Reader, m: dict[str, Any], path: Path) -> tuple[str | None, str | None]:
    """The workflow kind and the blueprint reference (Nelson's `workflow.blueprint`, or a
    `blueprint` key of the plan itself)."""
    workflow = None
    blueprints: list[tuple[str, Path]] = []
    raw = m.get("workflow")
    if raw is not None:
        wpath = (*path, "workflow")
        if isinstance(raw, str):
            r.error(wpath, f"write workflow as a mapping, like `workflow: {{kind: {raw}}}`")
        wm = r.mapping(raw, wpath, ("kind", "blueprint")) if isinstance(raw, dict) else None
        if wm is not None:
            # as in Nelson: a workflow stanza without a kind means pulsar
            workflow = r.text(wm.get("kind"), (*wpath, "kind"), "pulsar")
            if workflow not in WORKFLOWS:
                r.error(
                    (*wpath, "kind"),
                    f"'{workflow}' is not a workflow; use one of {', '.join(WORKFLOWS)}",
                )
            if wm.get("blueprint") is not None:
                blueprints.append(
                    (r.text(wm["blueprint"], (*wpath, "blueprint")), (*wpath, "blueprint"))
                )
    if m.get("blueprint") is not None:
        blueprints.append((r.text(m["blueprint"], (*path, "blueprint")), (*path, "blueprint")))
    for text, bpath in blueprints:
        problem = blueprint_problem(text)
        if problem is not None:
            r.error(bpath, problem)
    if len(blueprints) == 2 and blueprints[0][0] != blueprints[1][0]:
        r.error(
            (*path, "blueprint"),
            f"the plan names two blueprints, '{blueprints[0][0]}' in workflow and "
            f"'{blueprints[1][0]}' here; keep one",
        )
    return workflow, blueprints[0][0] if blueprints else None


def unique(r: Reader, names: list[tuple[str, Path]], what: str) -> None:
    seen: dict[str, Path] = {}
    for name, path in names:
        if name in seen:
            first = format_path(seen[name])
            r.error(path, f"{what} '{name}' is declared twice (first at {first})")
        else:
            seen[name] = path
