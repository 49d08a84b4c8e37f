"""The Nomad job (API JSON) that runs one stack: job ID = stack name, made from a blueprint.

`variables(spec)` is what a blueprint is rendered from (docs/nomad.md lists them); the default
blueprint (blueprints/nomad.yml) makes a `service` job, or a `batch` job with a `periodic`
block for units that run on a schedule; one task group with `Count = instances`, one `docker`
task with the image from the runtime registry, the manifest's ports as dynamic ports (labels
with `_` for `-`, since Nomad turns them into NOMAD_PORT_<label> variables), cpu in MHz
(1 core = 1000 MHz) and memory in MB, the plan's environment plus the NELSON_* variables,
`Meta` naming the stack, for services an `Update` block and a `Service` per port (named after
the stack, in Nomad's own catalog or, where the datacenter has Consul, in Consul) carrying the
plan's health checks, and where the datacenter has Vault a task `Vault` block with the
stack's policy (Nomad derives a token limited to it and hands it to the task as VAULT_TOKEN)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from domain import blueprints
from domain.runtime import LaunchSpec

SECOND = 1_000_000_000  # Nomad's JSON durations are nanoseconds
MHZ_PER_CORE = 1000


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


DEFAULT_BLUEPRINT = Path(__file__).with_name("blueprints") / "nomad.yml"


def default_blueprint() -> str:
    return DEFAULT_BLUEPRINT.read_text(encoding="utf-8")


def variables(
    spec: LaunchSpec, datacenter: str, region: str | None = None, *, consul: bool = False
) -> dict[str, Any]:
    """What a Nomad blueprint is rendered from (documented in docs/nomad.md). With `consul`
    the services are registered in the datacenter's Consul, where the bot reads their health."""
    checks = [
        {
            "name": probe.name,
            "port_label": probe.port_label,
            "nomad_label": nomad_label(probe.port_label),
            "type": "tcp" if probe.protocol == "tcp" else "http",
            "protocol": probe.protocol,
            "path": probe.path or "/",
            "interval_ns": max(probe.interval_seconds, 1) * SECOND,
            "timeout_ns": max(probe.timeout_seconds, 1) * SECOND,
        }
        for probe in spec.health
    ]
    return {
        "stack": spec.stack,
        "unit": spec.unit,
        "version": spec.version,
        "namespace": spec.namespace,
        "datacenter": datacenter,
        "plan": spec.plan,
        "image": spec.image,
        "instances": spec.instances,
        "cpu": spec.cpu,
        "cpu_mhz": max(int(spec.cpu * MHZ_PER_CORE), 1),
        "memory_mb": max(spec.memory_mb, 10),
        "schedule": spec.schedule,
        "region": region,
        "meta": meta(spec),
        "env": [{"name": k, "value": v} for k, v in environment(spec).items()],
        "ports": [
            {
                "label": p.label,
                "nomad_label": nomad_label(p.label),
                "number": p.number,
                "protocol": p.protocol,
                "first": i == 0,
            }
            for i, p in enumerate(spec.ports)
        ],
        "checks": checks,
        # one service per port, named as Nelson names it: the stack (`/v1/health/service/<stack>`)
        "service_name": spec.stack[:63],
        "service_provider": "consul" if consul else "nomad",
        # the stack's Vault policy (None without Vault): Nomad derives the task's token from it
        "vault_policy": spec.vault_policy,
    }


def job_for(
    spec: LaunchSpec,
    datacenter: str,
    region: str | None = None,
    blueprint: str | None = None,
    name: str = "the default Nomad blueprint",
    *,
    consul: bool = False,
) -> dict[str, Any]:
    """The job's JSON as Nomad's API takes it (`{"Job": ...}` wraps it on submission), from
    `blueprint` (the default one when None). `datacenter` is the Nomad datacenter the job runs
    in (Nelson's datacenter name). BlueprintError when the blueprint renders no valid job."""
    job = blueprints.render(
        default_blueprint() if blueprint is None else blueprint,
        variables(spec, datacenter, region, consul=consul),
        name=name,
    )
    if job.get("ID") != spec.stack:
        raise blueprints.BlueprintError(
            f"{name}: the job's ID must be the stack name (write `ID: {{{{ stack }}}}`)"
        )
    if not isinstance(job.get("TaskGroups"), list) or not job["TaskGroups"]:
        raise blueprints.BlueprintError(f"{name}: the job has no TaskGroups list")
    return job
