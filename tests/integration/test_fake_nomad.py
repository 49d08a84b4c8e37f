"""The fake Nomad on its own, driven with python-nomad as any Nomad client would: shapes from
Nomad's OpenAPI document, ACLs, and the failure modes tests rely on."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import nomad
import pytest
from nomad.api import exceptions as errors

from tests.fakes.nomad import FakeNomad, schema

SECOND = 1_000_000_000
ADMIN, READER = "admin-secret", "reader-secret"


def job(job_id: str = "web", count: int = 2, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ID": job_id,
        "Name": job_id,
        "Type": "service",
        "Datacenters": ["dc1"],
        "Update": {
            "HealthCheck": "checks",
            "MinHealthyTime": 1 * SECOND,
            "HealthyDeadline": 2 * SECOND,
        },
        "TaskGroups": [
            {
                "Name": "web",
                "Count": count,
                "Networks": [{"DynamicPorts": [{"Label": "http"}]}],
                "Services": [
                    {
                        "Name": "web",
                        "PortLabel": "http",
                        "Provider": "nomad",
                        "Checks": [
                            {"Type": "http", "Path": "/", "Interval": SECOND, "Timeout": SECOND}
                        ],
                    }
                ],
                "Tasks": [
                    {
                        "Name": "web",
                        "Driver": "docker",
                        "Config": {"image": "127.0.0.1:1/web:1"},
                        "Resources": {"CPU": 100, "MemoryMB": 64},
                    }
                ],
            }
        ],
    }
    body.update(extra)
    return body


@pytest.fixture
def fake() -> Iterator[FakeNomad]:
    acl: dict[str, str | dict[str, frozenset[str]]] = {
        ADMIN: "management",
        READER: {"default": frozenset({"read-job", "list-jobs"})},
    }
    with FakeNomad(acl=acl) as running:
        yield running
    assert not running.schema_problems  # every answer had the document's shape


def client(fake: FakeNomad, token: str | None = ADMIN) -> nomad.Nomad:
    return nomad.Nomad(address=fake.address, token=token, timeout=5)


def until(condition: Callable[[], Any], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_the_vendored_document_is_nomads_openapi() -> None:
    document = schema.document()
    assert document["info"]["title"] == "Nomad" and document["openapi"].startswith("3.")
    assert schema.request_schema("post", "/job/{jobName}") == "JobRegisterRequest"
    assert schema.problems("JobRegisterRequest", {"Job": job()}) == []
    assert schema.problems("JobRegisterRequest", {"Job": {"TaskGroups": {"Count": 2}}}) == [
        "Job.TaskGroups: {'Count': 2} is not of type 'array'"
    ]


def test_a_service_job_places_allocations_and_a_deployment_that_succeeds(
    fake: FakeNomad,
) -> None:
    api = client(fake)
    registered = api.job.register_job("web", {"Job": job()})
    assert registered["EvalID"] and registered["JobModifyIndex"] > 0
    deployment = until(
        lambda: (d := api.job.get_deployment("web")) and d["Status"] == "successful" and d
    )
    assert deployment["TaskGroups"]["web"]["HealthyAllocs"] == 2
    allocs = api.job.get_allocations("web")
    assert sorted(a["Name"] for a in allocs) == ["web.web[0]", "web.web[1]"]
    assert {a["ClientStatus"] for a in allocs} == {"running"}
    full = api.allocation.get_allocation(allocs[0]["ID"])
    [port] = full["AllocatedResources"]["Shared"]["Ports"]
    assert port["Label"] == "http" and 12000 <= port["Value"] <= 19999
    assert port["HostIP"] == "127.0.0.1"
    assert api.jobs.get_jobs()[0]["ID"] == "web"
    # the same job again changes nothing; a changed one gets a new version
    assert (
        api.job.register_job("web", {"Job": job()})["JobModifyIndex"]
        == (registered["JobModifyIndex"])
    )
    api.job.register_job("web", {"Job": job(Meta={"v": "2"})})
    assert api.job.get_job("web")["Version"] == 1
    api.job.deregister_job("web", purge=True)
    with pytest.raises(errors.URLNotFoundNomadException):
        api.job.get_job("web")
    assert api.job.get_allocations("web") == []


def test_acl_tokens_are_enforced_as_nomad_does(fake: FakeNomad) -> None:
    with pytest.raises(errors.URLNotAuthorizedNomadException) as anonymous:
        client(fake, None).jobs.get_jobs()
    assert anonymous.value.nomad_resp.text == "Permission denied"
    with pytest.raises(errors.URLNotAuthorizedNomadException) as unknown:
        client(fake, "who-knows").jobs.get_jobs()
    assert unknown.value.nomad_resp.text == "ACL token not found"
    reader = client(fake, READER)
    assert reader.jobs.get_jobs() == []
    with pytest.raises(errors.URLNotAuthorizedNomadException):
        reader.job.register_job("web", {"Job": job()})
    assert client(fake, None).status.leader.get_leader() == "127.0.0.1:4647"  # needs no token
    assert fake.requests[0] == ("GET", "/v1/jobs", None)


def test_invalid_jobs_are_refused_with_400_and_nomads_messages(fake: FakeNomad) -> None:
    api = client(fake)
    with pytest.raises(errors.BadRequestNomadException) as typed:
        api.job.register_job("web", {"Job": job(count="2")})  # type: ignore[arg-type]
    assert "Failed to decode request body" in typed.value.nomad_resp.text
    with pytest.raises(errors.BadRequestNomadException) as invalid:
        api.job.register_job("web", {"Job": job(Datacenters=[], Periodic={"Spec": "@daily"})})
    assert invalid.value.nomad_resp.text == (
        "2 errors occurred:\n\t* Missing job datacenters\n\t* Periodic can only be used with "
        '"batch" or "sysbatch" scheduler\n\n'
    )
    with pytest.raises(errors.BadRequestNomadException, match="does not match"):
        api.job.register_job("other", {"Job": job()})
    answer = api.validate.validate_job({"Job": job(Datacenters=[])}).json()
    assert answer["ValidationErrors"] == ["Missing job datacenters"]
    assert not fake.jobs


def test_failures_5xx_and_connection_refused(fake: FakeNomad) -> None:
    api = client(fake)
    fake.fail_requests(500, count=2)
    for _ in range(2):
        with pytest.raises(errors.BaseNomadException) as failed:
            api.jobs.get_jobs()
        assert failed.value.nomad_resp.status_code == 500
        assert failed.value.nomad_resp.text == "rpc error: No cluster leader"
    assert api.jobs.get_jobs() == []
    fake.refuse_connections()
    with pytest.raises(errors.BaseNomadException) as refused:
        api.jobs.get_jobs()
    assert "Connection refused" in str(refused.value)
    fake.accept_connections()
    assert api.jobs.get_jobs() == []


def test_failing_allocations_fail_the_deployment(fake: FakeNomad) -> None:
    api = client(fake)
    fake.fail_allocations("web", "Failed to pull image: manifest unknown")
    api.job.register_job("web", {"Job": job(count=1)})
    deployment = until(
        lambda: (d := api.job.get_deployment("web")) and d["Status"] == "failed" and d
    )
    assert deployment["StatusDescription"] == "Failed due to unhealthy allocations"
    [alloc] = api.job.get_allocations("web")
    assert alloc["ClientStatus"] == "failed" and alloc["DeploymentStatus"]["Healthy"] is False
    [event] = alloc["TaskStates"]["web"]["Events"]
    assert event["Type"] == "Driver Failure" and "manifest unknown" in event["DisplayMessage"]


def test_checks_that_never_pass_end_unhealthy_at_the_healthy_deadline(fake: FakeNomad) -> None:
    api = client(fake)
    fake.make_unhealthy("web")
    api.job.register_job("web", {"Job": job(count=1)})
    deployment = until(
        lambda: (d := api.job.get_deployment("web")) and d["Status"] == "failed" and d
    )
    assert deployment["TaskGroups"]["web"]["UnhealthyAllocs"] == 1


def test_a_lost_node_loses_allocations_and_places_new_ones(fake: FakeNomad) -> None:
    api = client(fake)
    api.job.register_job("web", {"Job": job(count=1)})
    until(lambda: fake.running_allocations("web"))
    fake.lose_node()
    allocs = api.job.get_allocations("web")
    assert "lost" in {a["ClientStatus"] for a in allocs}
    until(lambda: fake.running_allocations("web"))
    assert len([a for a in api.job.get_allocations("web") if a["DesiredStatus"] == "run"]) == 1


def test_plan_shows_a_diff_and_changes_nothing(fake: FakeNomad) -> None:
    api = client(fake)
    added = api.job.plan_job("web", {"Job": job()}, diff=True)
    assert added["Diff"]["Type"] == "Added" and not fake.jobs
    api.job.register_job("web", {"Job": job()})
    edited = api.job.plan_job("web", {"Job": job(count=3)}, diff=True)
    [field] = edited["Diff"]["Fields"]
    assert field == {
        "Type": "Edited",
        "Name": "TaskGroups[0].Count",
        "Old": "2",
        "New": "3",
        "Annotations": None,
    }
