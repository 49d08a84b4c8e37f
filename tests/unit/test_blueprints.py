"""Blueprints: rendering in the sandbox, errors that name the line, the default Nomad one."""

from __future__ import annotations

import dataclasses

import pytest

from adapters.scheduler.nomad_job import default_blueprint, job_for, variables
from commands.grammar import canonical, parse_command
from commands.model import ListBlueprints, RegisterBlueprint, Render
from domain import blueprints
from domain.runtime import HealthProbe, LaunchSpec, PortSpec
from domain.versions import Version

SPEC = LaunchSpec(
    stack="howdy--1-0-0--aaaaaaaa",
    unit="howdy",
    version="1.0.0",
    namespace="dev",
    datacenter="west",
    plan="default",
    image="127.0.0.1:5000/howdy@sha256:" + "1" * 64,
    instances=2,
    cpu=0.25,
    memory_mb=128,
    environment=(("QUOTE", 'say "hi": {now}'), ("EMPTY", "")),
    ports=(PortSpec("default", 8080, "http"), PortSpec("admin-api", 9000, "tcp")),
    health=(HealthProbe("alive", "default", "http", "/health", 2, 5),),
)


def test_values_are_written_as_json_so_no_text_breaks_the_document() -> None:
    job = blueprints.render("Env:\n  A: {{ value }}\nN: {{ n }}\n", {"value": 'a: "b" # c', "n": 3})
    assert job == {"Env": {"A": 'a: "b" # c'}, "N": 3}


def test_errors_name_the_blueprint_and_the_line() -> None:
    with pytest.raises(blueprints.BlueprintError) as undefined:
        blueprints.render("ID: {{ stack }}\nImage: {{ imgae }}\n", {"stack": "s"}, name="web@2")
    assert str(undefined.value) == "web@2 line 2: 'imgae' is undefined"
    with pytest.raises(blueprints.BlueprintError) as syntax:
        blueprints.render("ID: x\n{% for p in ports %}\n", {"ports": []}, name="web@2")
    assert str(syntax.value).startswith("web@2 line 2: Unexpected end of template")
    with pytest.raises(blueprints.BlueprintError) as yaml_error:
        blueprints.render("ID: x\n  - oops: [\n", {}, name="web@2")
    assert "web@2: rendered line 2" in str(yaml_error.value)
    with pytest.raises(blueprints.BlueprintError, match="not a mapping"):
        blueprints.render("- a\n", {})


def test_the_sandbox_refuses_reaching_into_python() -> None:
    with pytest.raises(blueprints.BlueprintError, match="line 1"):
        blueprints.render("X: {{ stack.__class__.__mro__[1].__subclasses__() }}\n", {"stack": "s"})


def test_refs_and_syntax_checks() -> None:
    assert blueprints.parse_ref("web@3") == blueprints.BlueprintRef("web", 3)
    assert str(blueprints.parse_ref("web")) == "web"
    for bad in ("Web", "web@", "web@0", "web@x", "a b"):
        with pytest.raises(blueprints.BlueprintError):
            blueprints.parse_ref(bad)
    blueprints.check(default_blueprint())
    with pytest.raises(blueprints.BlueprintError, match="line 3"):
        blueprints.check("a: 1\nb: 2\n{% if %}\n")


def test_the_default_nomad_blueprint_makes_the_documented_job() -> None:
    job = job_for(SPEC, "west", "eu")
    assert (job["ID"], job["Type"], job["Region"], job["Datacenters"]) == (
        SPEC.stack,
        "service",
        "eu",
        ["west"],
    )
    [group] = job["TaskGroups"]
    [task] = group["Tasks"]
    assert group["Count"] == 2
    assert [p["Label"] for p in group["Networks"][0]["DynamicPorts"]] == ["default", "admin_api"]
    assert task["Config"] == {"image": SPEC.image, "ports": ["default", "admin_api"]}
    assert task["Resources"] == {"CPU": 250, "MemoryMB": 128}
    assert task["Env"]["QUOTE"] == 'say "hi": {now}' and task["Env"]["EMPTY"] == ""
    assert task["Env"]["NELSON_PORT_ADMIN_API"] == "${NOMAD_PORT_admin_api}"
    assert task["Env"]["NELSON_NAMESPACE"] == "dev" and task["Env"]["NELSON_PLAN"] == "default"
    web, admin = group["Services"]
    assert web["Checks"] == [
        {
            "Name": "alive",
            "Type": "http",
            "PortLabel": "default",
            "Interval": 5_000_000_000,
            "Timeout": 2_000_000_000,
            "Path": "/health",
            "Protocol": "http",
        }
    ]
    assert admin["Checks"] is None  # no check on that port
    assert job["Update"]["HealthCheck"] == "checks"
    periodic = job_for(dataclasses.replace(SPEC, schedule="*/5 * * * *", health=()), "west")
    assert periodic["Type"] == "batch" and periodic["Periodic"]["Spec"] == "*/5 * * * *"
    assert "Update" not in periodic and "Services" not in periodic["TaskGroups"][0]


def test_a_blueprint_must_keep_the_stack_as_job_id() -> None:
    with pytest.raises(blueprints.BlueprintError, match=r"web@1: the job's ID must be"):
        job_for(
            dataclasses.replace(SPEC, blueprint="ID: x\nTaskGroups: []\n"),
            "w",
            None,
            "ID: x\nTaskGroups: []\n",
            "web@1",
        )
    assert set(variables(SPEC, "west")) >= {"stack", "image", "ports", "checks", "env", "meta"}


def test_the_commands_parse_and_print_back() -> None:
    render = parse_command("render howdy 1.2.3 at dc-west in qa plan big")
    assert render == Render("howdy", Version(1, 2, 3), "dc-west", "qa", "big")
    assert canonical(render) == "render howdy 1.2.3 at dc-west in qa plan big"
    assert parse_command("blueprint web-svc ./web.yml") == RegisterBlueprint("web-svc", "./web.yml")
    assert parse_command("blueprints") == ListBlueprints()


def test_the_default_blueprint_passes_the_vault_policy_and_registers_in_consul() -> None:
    plain = job_for(SPEC, "west")
    [task] = plain["TaskGroups"][0]["Tasks"]
    assert "Vault" not in task
    assert {s["Provider"] for s in plain["TaskGroups"][0]["Services"]} == {"nomad"}
    spec = dataclasses.replace(
        SPEC,
        vault_policy="nelson__dev__howdy--1-0-0--aaaaaaaa",
        environment=(("NELSON_VAULT_POLICYNAME", "nelson__dev__howdy--1-0-0--aaaaaaaa"),),
    )
    job = job_for(spec, "west", consul=True)
    [task] = job["TaskGroups"][0]["Tasks"]
    assert task["Vault"] == {
        "Policies": ["nelson__dev__howdy--1-0-0--aaaaaaaa"],
        "ChangeMode": "restart",
        "Env": True,
    }
    assert task["Env"]["NELSON_VAULT_POLICYNAME"] == "nelson__dev__howdy--1-0-0--aaaaaaaa"
    services = job["TaskGroups"][0]["Services"]
    # one service per port, named after the stack: Consul's /v1/health/service/<stack>
    assert [(s["Name"], s["PortLabel"], s["Provider"]) for s in services] == [
        (SPEC.stack, "default", "consul"),
        (SPEC.stack, "admin_api", "consul"),
    ]
    assert "port=admin-api" in services[1]["Tags"]
