"""The Nomad job (API JSON) that runs one stack: job ID = stack name.

A `service` job, or a `batch` job with a `periodic` block for units that run on a schedule;
one task group with `Count = instances`, one `docker` task with the image from the runtime
registry, the manifest's ports as dynamic ports (labels with `_` for `-`, since Nomad turns
them into NOMAD_PORT_<label> variables), cpu in MHz (1 core = 1000 MHz) and memory in MB, the
plan's environment plus the NELSON_* variables, `Meta` naming the stack, and for services an
`Update` block with a `Service` per port carrying the plan's health checks."""

from __future__ import annotations

from typing import Any

from domain.runtime import LaunchSpec

SECOND = 1_000_000_000  # Nomad's JSON durations are nanoseconds
MHZ_PER_CORE = 1000
MIN_HEALTHY_TIME = 10 * SECOND
HEALTHY_DEADLINE = 5 * 60 * SECOND
PROGRESS_DEADLINE = 10 * 60 * SECOND


def nomad_label(label: str) -> str:
    return label.replace("-", "_")


def manifest_label(label: str) -> str:
    """Back from Nomad's label: manifest labels never hold `_`, so this is exact."""
    return label.replace("_", "-")


def meta(spec: LaunchSpec) -> dict[str, str]:
    return {
        "nelson_stack": spec.stack,
        "nelson_unit": spec.unit,
        "nelson_version": spec.version,
        "nelson_namespace": spec.namespace,
        "nelson_datacenter": spec.datacenter,
        "nelson_plan": spec.plan,
    }


def environment(spec: LaunchSpec) -> dict[str, str]:
    """The plan's variables, then Nelson's (Nomad interpolates the ${NOMAD_...} ones)."""
    env = dict(spec.environment)
    env.update(
        {
            "NELSON_STACKNAME": spec.stack,
            "NELSON_DATACENTER": spec.datacenter,
            "NELSON_NAMESPACE": spec.namespace,
            "NELSON_PLAN": spec.plan,
            "NELSON_INSTANCE": "${NOMAD_ALLOC_INDEX}",
        }
    )
    for port in spec.ports:
        variable = f"NELSON_PORT_{port.label.upper().replace('-', '_')}"
        env[variable] = "${NOMAD_PORT_" + nomad_label(port.label) + "}"
    if spec.ports:
        env["PORT"] = "${NOMAD_PORT_" + nomad_label(spec.ports[0].label) + "}"
    return env


def _checks(spec: LaunchSpec, label: str) -> list[dict[str, Any]]:
    checks = []
    for probe in spec.health:
        if probe.port_label != label:
            continue
        check: dict[str, Any] = {
            "Name": probe.name,
            "Type": "tcp" if probe.protocol == "tcp" else "http",
            "PortLabel": nomad_label(label),
            "Interval": max(probe.interval_seconds, 1) * SECOND,
            "Timeout": max(probe.timeout_seconds, 1) * SECOND,
        }
        if probe.protocol != "tcp":
            check["Path"] = probe.path or "/"
            check["Protocol"] = probe.protocol
        checks.append(check)
    return checks


def job_for(spec: LaunchSpec, datacenter: str, region: str | None = None) -> dict[str, Any]:
    """The job's JSON as Nomad's API takes it (`{"Job": ...}` wraps it on submission).
    `datacenter` is the Nomad datacenter the job runs in (Nelson's datacenter name)."""
    ports = [{"Label": nomad_label(p.label)} for p in spec.ports]
    task: dict[str, Any] = {
        "Name": spec.unit,
        "Driver": "docker",
        "Config": {"image": spec.image, "ports": [p["Label"] for p in ports]},
        "Env": environment(spec),
        "Meta": meta(spec),
        "Resources": {
            "CPU": max(int(spec.cpu * MHZ_PER_CORE), 1),
            "MemoryMB": max(spec.memory_mb, 10),
        },
    }
    group: dict[str, Any] = {
        "Name": spec.unit,
        "Count": spec.instances,
        "Tasks": [task],
        "Meta": meta(spec),
    }
    if ports:
        group["Networks"] = [{"Mode": "host", "DynamicPorts": ports}]
    job: dict[str, Any] = {
        "ID": spec.stack,
        "Name": spec.stack,
        "Datacenters": [datacenter],
        "Meta": meta(spec),
        "TaskGroups": [group],
    }
    if region:
        job["Region"] = region
    if spec.schedule is not None:
        job["Type"] = "batch"
        job["Periodic"] = {
            "Enabled": True,
            "SpecType": "cron",
            "Spec": spec.schedule,
            "ProhibitOverlap": True,
        }
        return job
    job["Type"] = "service"
    group["Services"] = [
        {
            # one service per unit and port; versions tell themselves apart by tag
            "Name": f"{spec.unit}-{p.label}"[:63].rstrip("-"),
            "PortLabel": nomad_label(p.label),
            "Provider": "nomad",
            "Tags": ["nelson", f"unit={spec.unit}", f"version={spec.version}"],
            "Checks": _checks(spec, p.label),
        }
        for p in spec.ports
    ]
    job["Update"] = {
        "MaxParallel": 1,
        "HealthCheck": "checks" if spec.health else "task_states",
        "MinHealthyTime": MIN_HEALTHY_TIME,
        "HealthyDeadline": HEALTHY_DEADLINE,
        "ProgressDeadline": PROGRESS_DEADLINE,
        "AutoRevert": False,
    }
    return job
