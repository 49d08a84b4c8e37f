from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from domain.manifest import ManifestError, ManifestInvalid, parse_manifest, reader

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

BASE = """
units:
  - name: web
    description: serves the web
    ports:
      - default->8080/http
plans:
  - name: p
namespaces:
  - name: dev
    units:
      - ref: web
        plans: [p]
"""


def errors(text: str, default_namespace: str = "dev") -> list[ManifestError]:
    with pytest.raises(ManifestInvalid) as info:
        parse_manifest(text, default_namespace=default_namespace)
    return list(info.value.errors)


def only_error(text: str) -> ManifestError:
    found = errors(text)
    assert len(found) == 1, [str(e) for e in found]
    return found[0]


def test_examples_are_valid_and_typed() -> None:
    howdy = parse_manifest((EXAMPLES / "howdy-service.nelson.yml").read_text())
    unit = howdy.unit("howdy-http")
    assert unit is not None
    assert unit.dependencies[0].unit == "accounts" and unit.dependencies[0].minor == 2
    assert [p.name for p in howdy.plans_for("howdy-http", "qa")] == ["qa-plan"]
    qa = howdy.plan("qa-plan")
    assert qa is not None and qa.instances == 2 and qa.cpu_request == 0.25
    assert qa.traffic_shift is not None and qa.traffic_shift.duration_seconds == 1800
    assert howdy.datacenters.allows("dc-east") and not howdy.datacenters.allows("dc-legacy")
    assert howdy.notifications.slack_channels == ("howdy-deploys",)
    assert howdy.loadbalancers[0].routes[0].port == 8444
    job = parse_manifest((EXAMPLES / "nightly-job.nelson.yml").read_text())
    assert job.unit_kind("nightly-report") == "job"
    nightly = job.plan("nightly")
    assert nightly is not None and nightly.schedule is not None
    assert nightly.schedule.cron == "30 2 * * *"
    hourly = job.plan("hourly-preview")
    assert hourly is not None and hourly.schedule is not None and hourly.schedule.kind == "hourly"
    matrix = parse_manifest((EXAMPLES / "multi-plan.nelson.yml").read_text())
    assert [p.name for p in matrix.plans_for("search", "prod")] == ["search-canary", "search-main"]
    assert matrix.unit_kind("search") == "service"


def test_defaults() -> None:
    manifest = parse_manifest(BASE)
    plan = manifest.plan("p")
    assert plan is not None
    assert (plan.cpu, plan.memory, plan.instances) == (0.5, 512, 1)
    assert plan.traffic_shift is None and plan.schedule is None


def test_yaml_syntax_error_has_line_and_column() -> None:
    e = only_error("units:\n  - name: web\n    ports: [default->80/http\nplans: []\n")
    assert e.message.startswith("not valid YAML")
    assert e.line is not None and e.line >= 3 and e.column is not None


def test_empty_and_non_mapping_documents() -> None:
    assert "empty" in only_error("").message
    assert "expected a mapping" in only_error("- a\n- b\n").message


def test_unknown_keys_are_named_with_suggestion() -> None:
    e = errors(BASE.replace("plans:\n  - name: p", "plans:\n  - name: p\n    memroy: 5"))
    assert any(x.location == "plans[0].memroy" and "did you mean 'memory'" in x.message for x in e)
    # unknown top-level keys are warnings: Nelson users keep YAML anchors in them
    top = parse_manifest(BASE + "notification: {}\n").warnings
    assert any(x.location == "notification" and "notifications" in x.message for x in top)


def test_every_error_reported_at_once_with_locations() -> None:
    text = """
units:
  - name: Web_Bad
    ports:
      - default->99999/http
      - metrics->9000/udp
    dependencies:
      - ref: accounts-1.2
    meta: [this-tag-is-way-too-long]
plans:
  - name: p
    cpu: 0
    memory: -4
    cpu_request: 2
    instances:
      desired: 0
    environment: [NOT VALID]
    health_checks:
      - name: h
        port_reference: nope
        protocol: http
    traffic_shift:
      policy: sideways
      duration: forever
    retries: 0
    expiration_policy: retain-lastest
    schedule: "every tuesday"
namespaces:
  - name: dev
    units:
      - ref: Web_Bad
        plans: [p, q]
"""
    found = {e.location: e for e in errors(text)}
    expected = {
        "units[0].name": "not a valid unit name",
        "units[0].ports[0]": "out of range",
        "units[0].ports[1]": "protocol 'udp'",
        "units[0].dependencies[0].ref": "unit@MAJOR.MINOR",
        "units[0].meta[0]": "1 to 14",
        "plans[0].cpu": "greater than 0",
        "plans[0].memory": "greater than 0",
        "plans[0].cpu_request": "must not exceed cpu",
        "plans[0].instances.desired": "greater than 0",
        "plans[0].environment[0]": "KEY=value",
        "plans[0].health_checks[0].path": "needs a path",
        "plans[0].traffic_shift.policy": "linear or atomic",
        "plans[0].traffic_shift.duration": "not a duration",
        "plans[0].retries": "greater than 0",
        "plans[0].expiration_policy": "did you mean 'retain-latest'",
        "plans[0].schedule": "cron expression",
        "namespaces[0].units[0].plans[1]": "no plan 'q'",
    }
    for location, words in expected.items():
        assert location in found, (location, sorted(found))
        assert words in found[location].message, (location, found[location].message)
    assert found["plans[0].cpu"].line is not None  # positions point into the YAML


def test_request_needs_a_limit() -> None:
    text = BASE.replace("  - name: p\n", "  - name: p\n    memory_request: 128\n")
    e = only_error(text)
    assert e.location == "plans[0].memory_request" and "needs a memory limit" in e.message


def test_port_rules() -> None:
    e = only_error(BASE.replace("default->8080/http", "web->8080/http"))
    assert e.location == "units[0].ports" and "'default'" in e.message
    dup = errors(
        BASE.replace(
            "      - default->8080/http", "      - default->8080/http\n      - default->8081/http"
        )
    )
    assert any("port label 'default' is declared twice" in x.message for x in dup)


def test_health_check_port_reference_must_exist() -> None:
    text = BASE.replace(
        "  - name: p\n",
        "  - name: p\n    health_checks:\n      - name: h\n        port_reference: admin\n"
        "        protocol: tcp\n",
    )
    e = only_error(text)
    assert e.location == "plans[0].health_checks[0].port_reference"
    assert "no port labelled 'admin'" in e.message


def test_job_cannot_shift_traffic() -> None:
    text = BASE.replace(
        "  - name: p\n",
        "  - name: p\n    schedule: daily\n    traffic_shift:\n      policy: linear\n"
        "      duration: 5m\n",
    )
    e = only_error(text)
    assert e.location == "plans[0].traffic_shift" and "jobs take no traffic" in e.message


def test_references_resolve() -> None:
    e = only_error(BASE.replace("      - ref: web\n", "      - ref: wbe\n"))
    assert e.location == "namespaces[0].units[0].ref" and "did you mean 'web'" in e.message


def test_default_namespace_must_be_referenced() -> None:
    e = errors(BASE, default_namespace="prod")
    assert [x.location for x in e] == ["namespaces"]
    assert "default namespace 'prod'" in e[0].message


def test_self_dependency_and_cycles() -> None:
    two_units = """
units:
  - name: a
    dependencies: [{ref: b@1.0}]
  - name: b
    dependencies: [{ref: c@1.0}]
  - name: c
    dependencies: [{ref: a@1.0}, {ref: c@1.0}]
plans:
  - name: p
namespaces:
  - name: dev
    units:
      - {ref: a, plans: [p]}
      - {ref: b, plans: [p]}
      - {ref: c, plans: [p]}
"""
    found = errors(two_units)
    messages = [str(e) for e in found]
    assert any("cannot depend on itself" in m for m in messages)
    cycles = [m for m in messages if "dependency cycle" in m]
    assert len(cycles) == 1 and "a -> b -> c -> a" in cycles[0]


def test_local_dependency_must_exist_in_every_namespace() -> None:
    text = """
units:
  - name: a
    dependencies: [{ref: b@1.0}]
  - name: b
plans:
  - name: p
namespaces:
  - name: dev
    units:
      - {ref: a, plans: [p]}
      - {ref: b, plans: [p]}
  - name: qa
    units:
      - {ref: a, plans: [p]}
"""
    e = only_error(text)
    assert e.location == "units[0].dependencies[0].ref"
    assert "namespace 'qa'" in e.message


def test_datacenters_only_and_except_together_apply_both_with_a_warning() -> None:
    manifest = parse_manifest(BASE + "datacenters:\n  only: [a, b]\n  except: [b]\n")
    assert [w.location for w in manifest.warnings] == ["datacenters"]
    assert manifest.datacenters.allows("a")
    assert not manifest.datacenters.allows("b") and not manifest.datacenters.allows("c")


def test_loadbalancer_destination_must_exist() -> None:
    text = BASE + (
        "loadbalancers:\n  - name: lb\n    routes:\n      - name: r\n"
        "        expose: default->8444/http\n        destination: web->admin\n"
    )
    e = only_error(text)
    assert e.location == "loadbalancers[0].routes[0].destination"
    assert "no port labelled 'admin'" in e.message


def test_notifications_shape() -> None:
    e = only_error(BASE + "notifications:\n  email:\n    - recipient: not-an-address\n")
    assert e.location == "notifications.email[0].recipient"


def test_alert_opt_outs_must_name_alerts() -> None:
    text = BASE.replace("  - name: p\n", "  - name: p\n    alert_opt_outs: [ghost]\n")
    e = only_error(text)
    assert e.location == "plans[0].alert_opt_outs[0]" and "no alert 'ghost'" in e.message


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    e = only_error("\n".join([*lines, "units: *a8", "namespaces: []"]))
    assert "too complex" in e.message and "anchors and aliases" in e.message


def test_deep_nesting_is_refused() -> None:
    e = only_error("units: " + "[" * 5000 + "]" * 5000 + "\nnamespaces: []\n")
    assert "nested more than" in e.message


def test_ordinary_anchors_still_work() -> None:
    text = BASE.replace(
        "plans:\n  - name: p\n",
        "plans:\n  - name: p\n    environment: &env [A=1, B=2]\n"
        "  - name: q\n    environment: *env\n",
    )
    q = parse_manifest(text).plan("q")
    assert q is not None and q.environment == (("A", "1"), ("B", "2"))


@pytest.mark.parametrize(
    "text",
    ["", "a: 1\n", "base: &b {x: [1, 2]}\nother: *b\nwhen: 2024-01-02\n", "- [a, {b: null}]\n"],
)
def test_values_are_built_from_the_one_parse(text: str) -> None:
    data, marks = reader.load(text)
    assert data == yaml.safe_load(text)
    if data:
        assert marks[()] == (1, 1)
