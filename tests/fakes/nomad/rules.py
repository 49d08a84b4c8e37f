"""Nomad's own checks of a job beyond the OpenAPI shapes (after `structs.Job.Validate`).

Messages follow Nomad's wording and its multierror layout (`N error(s) occurred:` then one
`* ...` line each); the fake checks the rules that concern what the adapter submits, not all
of Nomad's."""

from __future__ import annotations

from typing import Any

SECOND = 1_000_000_000  # Nomad's durations are nanoseconds in JSON
JOB_TYPES = ("service", "batch", "system", "sysbatch")
CHECK_TYPES = ("http", "tcp", "script", "grpc")


VAULT_CHANGE_MODES = ("noop", "restart", "signal")


def multierror(errors: list[str]) -> str:
    head = "1 error occurred:" if len(errors) == 1 else f"{len(errors)} errors occurred:"
    return head + "".join(f"\n\t* {e}" for e in errors) + "\n\n"


def job_errors(job: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    job_id = job.get("ID") or ""
    if not job_id:
        errors.append("Missing job ID")
    elif " " in job_id:
        errors.append("Job ID contains a space")
    if not job.get("Name"):
        errors.append("Missing job name")
    kind = job.get("Type") or "service"
    if kind not in JOB_TYPES:
        errors.append(f"Invalid job type: {kind!r}")
    if not job.get("Datacenters"):
        errors.append("Missing job datacenters")
    if job.get("Priority") is not None and not 1 <= job["Priority"] <= 100:
        errors.append("Job priority must be between [1, 100]")
    if job.get("Periodic") and kind not in ("batch", "sysbatch"):
        errors.append('Periodic can only be used with "batch" or "sysbatch" scheduler')
    if job.get("Periodic") and not job["Periodic"].get("Spec"):
        errors.append("Must specify a spec")
    if job.get("Update") and kind in ("batch", "sysbatch"):
        errors.append(f'Job type "{kind}" does not allow update block')
    groups = job.get("TaskGroups") or []
    if not groups:
        errors.append("Missing job task groups")
    seen: dict[str, int] = {}
    for index, group in enumerate(groups, start=1):
        name = group.get("Name") or ""
        if name in seen:
            errors.append(f"Job task group {index} redefines '{name}' from group {seen[name]}")
        seen[name] = index
        problems = _group_errors(group, job)
        if problems:
            errors.append(
                f"Task group {name or index} validation failed: {multierror(problems).strip()}"
            )
    return errors


def _update_errors(update: dict[str, Any]) -> list[str]:
    errors = []
    min_healthy = update.get("MinHealthyTime") or 0
    deadline = update.get("HealthyDeadline") or 0
    progress = update.get("ProgressDeadline") or 0
    if update.get("HealthCheck") not in (None, "", "checks", "task_states", "manual"):
        errors.append(f"Invalid health check given: {update['HealthCheck']!r}")
    if (update.get("MaxParallel") or 0) < 0:
        errors.append("Max parallel can not be less than zero")
    if min_healthy < 0:
        errors.append("Minimum healthy time may not be less than zero")
    if deadline and min_healthy >= deadline:
        errors.append(
            f"Minimum healthy time must be less than healthy deadline: {min_healthy} > {deadline}"
        )
    if progress and deadline and progress < deadline:
        errors.append("Healthy deadline must be less than progress deadline")
    return errors


def _group_errors(group: dict[str, Any], job: dict[str, Any]) -> list[str]:
    errors = []
    if not group.get("Name"):
        errors.append("Missing task group name")
    if (group.get("Count") or 0) < 0:
        errors.append("Task group count can't be negative")
    if group.get("Update"):
        errors.extend(_update_errors(group["Update"]))
    tasks = group.get("Tasks") or []
    if not tasks:
        errors.append("Missing tasks for task group")
    labels = {
        port.get("Label")
        for network in group.get("Networks") or []
        for port in (network.get("DynamicPorts") or []) + (network.get("ReservedPorts") or [])
    }
    for service in group.get("Services") or []:
        errors.extend(_service_errors(service, labels))
    for task in tasks:
        problems = _task_errors(task, labels)
        if problems:
            name = task.get("Name") or "?"
            errors.append(f"Task {name} validation failed: {multierror(problems).strip()}")
    return errors


def _task_errors(task: dict[str, Any], labels: set[str | None]) -> list[str]:
    errors = []
    if not task.get("Name"):
        errors.append("Missing task name")
    if not task.get("Driver"):
        errors.append("Missing task driver")
    if task.get("Driver") == "docker" and not (task.get("Config") or {}).get("image"):
        errors.append('1 error(s) occurred:\n\n* Missing required field "image"')
    resources = task.get("Resources") or {}
    if "CPU" in resources and resources["CPU"] < 1:
        errors.append(f"minimum CPU value is 1; got {resources['CPU']}")
    if "MemoryMB" in resources and resources["MemoryMB"] < 10:
        errors.append(f"minimum MemoryMB value is 10; got {resources['MemoryMB']}")
    for service in task.get("Services") or []:
        errors.extend(_service_errors(service, labels))
    if task.get("Vault") is not None:
        problems = vault_errors(task["Vault"])
        if problems:
            errors.append(f"Vault validation failed: {multierror(problems).strip()}")
    return errors


def vault_errors(vault: dict[str, Any]) -> list[str]:
    """Nomad's checks on a task's `vault` block (after the API client's defaults:
    ChangeMode restart, Env true)."""
    errors = []
    policies = vault.get("Policies") or []
    if not policies:
        errors.append("Policy list cannot be empty")
    if "root" in policies:
        errors.append('Can not specify "root" policy')
    mode = vault.get("ChangeMode") or "restart"
    if mode == "signal" and not vault.get("ChangeSignal"):
        errors.append('Signal must be specified when using change mode "signal"')
    elif mode not in VAULT_CHANGE_MODES:
        errors.append(f'Unknown change mode "{mode}"')
    return errors


def vault_policies(job: dict[str, Any]) -> set[str]:
    """Every policy the job's tasks ask Vault for."""
    return {
        policy
        for group in job.get("TaskGroups") or []
        for task in group.get("Tasks") or []
        for policy in (task.get("Vault") or {}).get("Policies") or []
    }


def _service_errors(service: dict[str, Any], labels: set[str | None]) -> list[str]:
    errors = []
    name = service.get("Name") or ""
    if not name:
        errors.append("Service must have a name")
    port = service.get("PortLabel")
    if port and not str(port).isdigit() and port not in labels:
        errors.append(f'Port label "{port}" referenced by service "{name}" does not exist')
    for check in service.get("Checks") or []:
        kind = check.get("Type") or ""
        what = f'Check "{check.get("Name") or kind}"'
        if kind not in CHECK_TYPES:
            errors.append(f"{what} invalid: check type ({kind}) is not valid")
            continue
        if kind == "http" and not check.get("Path"):
            errors.append(f"{what} invalid: http type must have http path")
        if (check.get("Interval") or 0) < SECOND:
            errors.append(
                f"{what} invalid: interval ({check.get('Interval')}) cannot be lower than 1s"
            )
        if (check.get("Timeout") or 0) < SECOND:
            errors.append(f"{what} invalid: timeout ({check.get('Timeout')}) must be >= 1s")
        check_port = check.get("PortLabel") or port
        if check_port and not str(check_port).isdigit() and check_port not in labels:
            errors.append(f'{what} invalid: port label "{check_port}" does not exist')
    return errors
