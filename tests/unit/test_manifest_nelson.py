"""Manifests written the way Nelson's users write them: each of Nelson's v1 rules, judged as
Nelson judges it (valid ones valid, invalid ones invalid for the same reason)."""

from __future__ import annotations

import pytest

from domain.expiration import ExpirationPolicy
from domain.manifest import (
    DEFAULT_PLAN,
    Constraint,
    Manifest,
    ManifestError,
    ManifestInvalid,
    Notifications,
    Resource,
    Volume,
    parse_manifest,
)
from domain.traffic import ShiftPolicy

UNIT = """
units:
  - name: web
    description: serves pages
    ports:
      - default->8080/http
"""
PLAN = """
plans:
  - name: p
{extra}
namespaces:
  - name: dev
    units:
      - ref: web
        plans: [p]
"""


def with_plan(extra: str) -> str:
    return UNIT + PLAN.format(extra=extra)


def problems(text: str) -> dict[str, str]:
    with pytest.raises(ManifestInvalid) as info:
        parse_manifest(text)
    return {e.location: e.message for e in info.value.errors}


def only(text: str) -> ManifestError:
    with pytest.raises(ManifestInvalid) as info:
        parse_manifest(text)
    assert len(info.value.errors) == 1, [str(e) for e in info.value.errors]
    return info.value.errors[0]


# -- durations ----------------------------------------------------------------------------------


def test_durations_in_scala_syntax() -> None:
    text = with_plan(
        "    health_checks:\n      - name: http-status\n        port_reference: default\n"
        '        protocol: http\n        path: /\n        timeout: "10 seconds"\n'
        '        interval: "2 minutes"\n    traffic_shift:\n      policy: linear\n'
        '      duration: "5 minutes"\n'
    )
    plan = parse_manifest(text).plan("p")
    assert plan is not None and plan.traffic_shift is not None
    assert plan.traffic_shift.duration_seconds == 300
    check = plan.health_checks[0]
    assert (check.timeout_seconds, check.interval_seconds) == (10, 120)


def test_health_check_defaults_are_nelsons() -> None:
    text = with_plan(
        "    health_checks:\n      - name: tcp\n        port_reference: default\n"
        "        protocol: tcp\n"
    )
    plan = parse_manifest(text).plan("p")
    assert plan is not None
    assert (plan.health_checks[0].timeout_seconds, plan.health_checks[0].interval_seconds) == (
        2,
        10,
    )


@pytest.mark.parametrize("duration", ["61 seconds", "1.5 minutes", "2m", "4 days", "119h"])
def test_traffic_shift_between_one_minute_and_five_days(duration: str) -> None:
    text = with_plan(f"    traffic_shift:\n      policy: atomic\n      duration: {duration!r}\n")
    assert parse_manifest(text).plan("p") is not None


@pytest.mark.parametrize("duration", ["1 minute", "60s", "30 seconds", "5 days", "120 hours", "6d"])
def test_traffic_shift_outside_the_bounds_is_refused(duration: str) -> None:
    e = only(with_plan(f"    traffic_shift:\n      policy: atomic\n      duration: {duration!r}\n"))
    assert e.location == "plans[0].traffic_shift.duration"
    assert "longer than 1 minute and less than 5 days" in e.message


# -- plan limits --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "location", "words"),
    [
        ("    cpu: 101", "plans[0].cpu", "less than 100"),
        ("    cpu: 100", "plans[0].cpu", "less than 100"),
        ("    memory: 50001", "plans[0].memory", "less than 50,000"),
        ("    memory: 50000", "plans[0].memory", "less than 50,000"),
        ("    instances:\n      desired: 5000", "plans[0].instances.desired", "less than 5,000"),
        ("    instances:\n      desired: 0", "plans[0].instances.desired", "greater than 0"),
        ("    retries: 0", "plans[0].retries", "greater than 0"),
        ("    retries: two", "plans[0].retries", "whole number"),
        ("    cpu_request: 0.5", "plans[0].cpu_request", "needs a cpu limit"),
        ("    memory: 512\n    memory_request: 1024", "plans[0].memory_request", "must not exceed"),
    ],
)
def test_plan_limits(extra: str, location: str, words: str) -> None:
    e = only(with_plan(extra))
    assert e.location == location and words in e.message, str(e)


def test_limits_just_inside_the_bounds() -> None:
    text = with_plan(
        "    cpu: 99.5\n    memory: 49999\n    memory_request: 49999\n    instances:\n"
        "      desired: 4999\n    retries: 3"
    )
    plan = parse_manifest(text).plan("p")
    assert plan is not None
    assert (plan.cpu, plan.memory, plan.instances, plan.retries) == (99.5, 49999, 4999, 3)


# -- volumes, blueprint, constraints, workflow --------------------------------------------------


def test_volumes() -> None:
    text = with_plan(
        "    volumes:\n      - name: scratch\n        mountPath: /var/scratch\n        size: 500\n"
    )
    plan = parse_manifest(text).plan("p")
    assert plan is not None and plan.volumes == (Volume("scratch", "/var/scratch", 500),)
    found = problems(
        with_plan(
            "    volumes:\n      - name: a\n        mountPath: relative/dir\n        size: 5\n"
            "      - name: b\n        mountPath: /b\n        size: 0\n"
            "      - mountPath: /c\n        size: 5\n"
        )
    )
    assert "absolute path" in found["plans[0].volumes[0].mountPath"]
    assert "greater than 0" in found["plans[0].volumes[1].size"]
    assert "required" in found["plans[0].volumes[2].name"]


@pytest.mark.parametrize(
    ("extra", "blueprint", "workflow"),
    [
        ("    blueprint: nomad-service@3", "nomad-service@3", None),
        ("    blueprint: nomad-service", "nomad-service", None),
        ("    workflow:\n      kind: pulsar\n      blueprint: qux@HEAD", "qux@HEAD", "pulsar"),
        ("    workflow:\n      kind: canopus", None, "canopus"),
        ("    workflow:\n      blueprint: qux", "qux", "pulsar"),  # Nelson's default kind
        ("", None, None),
    ],
)
def test_blueprint_and_workflow(extra: str, blueprint: str | None, workflow: str | None) -> None:
    plan = parse_manifest(with_plan(extra)).plan("p")
    assert plan is not None and (plan.blueprint, plan.workflow) == (blueprint, workflow)


def test_bad_blueprints_and_workflows() -> None:
    found = problems(with_plan("    blueprint: nomad@latest"))
    assert "name@revision" in found["plans[0].blueprint"]
    found = problems(with_plan("    workflow:\n      kind: quasar"))
    assert "magnetar, canopus, pulsar" in found["plans[0].workflow.kind"]
    found = problems(with_plan("    workflow: magnetar"))
    assert "as a mapping" in found["plans[0].workflow"]
    found = problems(with_plan("    blueprint: a@1\n    workflow:\n      blueprint: b@2"))
    assert "two blueprints" in found["plans[0].blueprint"]


def test_constraints() -> None:
    text = with_plan(
        "    constraints:\n      - unique: [hostname]\n"
        "        cluster:\n          - fieldName: rack\n            param: r1\n"
        "        groupBy:\n          - fieldName: zone\n            param: 2\n"
        "          - fieldName: dc\n"
        "        like:\n          - fieldName: kernel\n            param: '^5\\.'\n"
        "        unlike:\n          - fieldName: os\n            param: windows.*\n"
    )
    plan = parse_manifest(text).plan("p")
    assert plan is not None
    assert plan.constraints == (
        Constraint("unique", "hostname"),
        Constraint("cluster", "rack", "r1"),
        Constraint("group_by", "zone", "2"),
        Constraint("group_by", "dc", None),
        Constraint("like", "kernel", "^5\\."),
        Constraint("unlike", "os", "windows.*"),
    )
    found = problems(
        with_plan(
            "    constraints:\n      - like:\n          - fieldName: os\n            param: '(['\n"
            "        spread: []\n"
        )
    )
    assert "regular expression" in found["plans[0].constraints[0].like[0].param"]
    assert "unknown key 'spread'" in found["plans[0].constraints[0].spread"]


# -- unit resources and plan URIs ---------------------------------------------------------------

RESOURCE_UNIT = """
units:
  - name: crawler
    description: crawls
    resources:
      - name: kafka
        description: the event log
"""


def test_resources_and_their_uris() -> None:
    text = RESOURCE_UNIT + (
        "plans:\n  - name: p\n    resources:\n      - ref: kafka\n"
        "        uri: kafka://broker-1.example.com:9092/events\n"
        "namespaces:\n  - name: dev\n    units:\n      - ref: crawler\n        plans: [p]\n"
    )
    manifest = parse_manifest(text)
    unit = manifest.unit("crawler")
    assert unit is not None and unit.resources == (Resource("kafka", "the event log"),)
    plan = manifest.plan("p")
    assert (
        plan is not None
        and plan.resource_uri("kafka") == "kafka://broker-1.example.com:9092/events"
    )


def test_an_empty_resources_stanza_is_an_error() -> None:
    e = only(
        "units:\n  - name: web\n    description: d\n    resources:\n"
        "namespaces:\n  - name: dev\n    units:\n      - ref: web\n"
    )
    assert e.location == "units[0].resources" and "is empty" in e.message


def test_a_unit_resource_needs_a_uri_in_each_plan_the_unit_uses() -> None:
    text = RESOURCE_UNIT + (
        "plans:\n  - name: with-uri\n    resources:\n      - ref: kafka\n        uri: kafka://k/1\n"
        "  - name: without\n"
        "namespaces:\n  - name: dev\n    units:\n      - ref: crawler\n"
        "        plans: [with-uri, without]\n"
    )
    e = only(text)
    assert e.location == "plans[1].resources" and "'kafka'" in e.message
    # the default plan gives no uri either
    e = only(RESOURCE_UNIT + "namespaces:\n  - name: dev\n    units:\n      - ref: crawler\n")
    assert e.location == "namespaces[0].units[0].plans" and "names no plan" in e.message


@pytest.mark.parametrize("uri", ["s3:^^", "s3:", "http://a b/c", "http://x/%zz", "a#b#c"])
def test_a_plan_resource_uri_must_parse(uri: str) -> None:
    text = RESOURCE_UNIT + (
        f"plans:\n  - name: p\n    resources:\n      - ref: kafka\n        uri: {uri!r}\n"
        "namespaces:\n  - name: dev\n    units:\n      - ref: crawler\n        plans: [p]\n"
    )
    e = only(text)
    assert e.location == "plans[0].resources[0].uri" and "is not a URI" in e.message


def test_a_password_in_a_bad_uri_is_not_repeated() -> None:
    text = RESOURCE_UNIT + (
        "plans:\n  - name: p\n    resources:\n      - ref: kafka\n"
        "        uri: 'kafka://admin:hunter2@broker^1'\n"
        "namespaces:\n  - name: dev\n    units:\n      - ref: crawler\n        plans: [p]\n"
    )
    e = only(text)
    assert "hunter2" not in str(e) and "admin:***@" in e.message


def test_resource_names_are_alphanumeric_and_hyphens() -> None:
    found = problems(
        "units:\n  - name: web\n    description: d\n    resources:\n      - name: s3_bucket\n"
        "namespaces:\n  - name: dev\n    units:\n      - ref: web\n"
    )
    assert "letters, digits, hyphens" in found["units[0].resources[0]"]


def test_a_plan_uri_no_unit_declares_is_only_a_warning() -> None:
    manifest = parse_manifest(
        with_plan("    resources:\n      - ref: extra\n        uri: http://example.com/x")
    )
    assert [w.location for w in manifest.warnings] == ["plans[0].resources[0].ref"]


# -- load balancers -----------------------------------------------------------------------------

LB = """
loadbalancers:
  - name: {name}
    routes:
      - name: http
        expose: default->8444/http
        destination: web->default
"""


def test_namespace_loadbalancers() -> None:
    text = (
        with_plan("")
        + "    loadbalancers:\n      - ref: web-lb\n        plan: p\n"
        + LB.format(name="web-lb")
    )
    manifest = parse_manifest(text)
    dev = manifest.namespace("dev")
    assert dev is not None and dev.loadbalancers[0].ref == "web-lb"
    assert dev.loadbalancers[0].plan == "p"
    assert manifest.loadbalancers[0].routes[0].port == 8444
    found = problems(
        with_plan("")
        + "    loadbalancers:\n      - ref: web-bl\n        plan: q\n"
        + LB.format(name="web-lb")
    )
    assert "did you mean 'web-lb'" in found["namespaces[0].loadbalancers[0].ref"]
    assert "no plan 'q'" in found["namespaces[0].loadbalancers[0].plan"]


def test_loadbalancer_rules() -> None:
    e = only(with_plan("") + LB.format(name="a-name-too-long"))
    assert e.location == "loadbalancers[0].name" and "longer than 12" in e.message
    assert parse_manifest(with_plan("") + LB.format(name="twelve-chars"))
    two_units = (
        "units:\n  - name: foo\n    description: d\n    ports: [default->9000/http]\n"
        "  - name: bar\n    description: d\n    ports: [default->9000/http]\n"
        "loadbalancers:\n  - name: lb\n    routes:\n"
        "      - expose: default->9000/http\n        destination: foo->default\n"
        "      - expose: default->9001/http\n        destination: bar->default\n"
        "namespaces:\n  - name: dev\n    units:\n      - ref: foo\n      - ref: bar\n"
    )
    e = only(two_units)
    assert e.location == "loadbalancers[0].routes" and "one unit" in e.message
    e = only(with_plan("") + "loadbalancers:\n  - name: lb\n    routes: []\n")
    assert "at least one route" in e.message
    found = problems(
        with_plan("") + "loadbalancers:\n  - name: lb\n    routes:\n"
        "      - expose: default-8444\n        destination: web:default\n"
    )
    assert "label->port/protocol" in found["loadbalancers[0].routes[0].expose"]
    assert "unit->port-label" in found["loadbalancers[0].routes[0].destination"]


# -- notifications ------------------------------------------------------------------------------


def test_notifications_in_nelsons_form() -> None:
    text = with_plan("") + (
        "notifications:\n  slack:\n    channels:\n      - development\n      - '#general'\n"
        "  email:\n    recipients:\n      - baxter@example.com\n"
    )
    assert parse_manifest(text).notifications == Notifications(
        ("development", "general"), ("baxter@example.com",)
    )


def test_the_older_list_form_reads_the_same() -> None:
    text = with_plan("") + (
        "notifications:\n  slack:\n    - channel: development\n    - channel: '#general'\n"
        "  email:\n    - recipient: baxter@example.com\n"
    )
    assert parse_manifest(text).notifications == Notifications(
        ("development", "general"), ("baxter@example.com",)
    )


def test_notification_addresses_are_checked() -> None:
    found = problems(
        with_plan("")
        + "notifications:\n  email:\n    recipients: [randal.mcmurphy, ok@example.org]\n"
        + "  slack:\n    channel: [x]\n"
    )
    assert "not an e-mail address" in found["notifications.email.recipients[0]"]
    assert "did you mean 'channels'" in found["notifications.slack.channel"]


# -- dependencies, plans, namespaces ------------------------------------------------------------


def test_a_dependency_name_is_anything_before_the_at() -> None:
    text = UNIT.replace(
        "    ports:", "    dependencies:\n      - ref: db.example@1.0\n    ports:"
    ) + PLAN.format(extra="")
    unit = parse_manifest(text).unit("web")
    assert unit is not None and (unit.dependencies[0].unit, unit.dependencies[0].major) == (
        "db.example",
        1,
    )
    e = only(text.replace("db.example@1.0", "db@1"))
    assert "unit@MAJOR.MINOR" in e.message


def test_no_plans_at_all_runs_with_the_default_plan() -> None:
    manifest = parse_manifest(UNIT + "namespaces:\n  - name: dev\n    units:\n      - ref: web\n")
    assert manifest.plans == ()
    assert manifest.plans_for("web", "dev") == (DEFAULT_PLAN,)
    assert manifest.plan("default") == DEFAULT_PLAN
    assert (DEFAULT_PLAN.cpu, DEFAULT_PLAN.memory, DEFAULT_PLAN.instances) == (0.5, 512, 1)
    assert manifest.unit_kind("web") == "service"


def test_a_unit_naming_no_plan_runs_with_the_default_plan_next_to_planned_ones() -> None:
    text = with_plan("    cpu: 2") + "  - name: qa\n    units:\n      - ref: web\n"
    manifest = parse_manifest(text)
    assert [p.name for p in manifest.plans_for("web", "dev")] == ["p"]
    assert manifest.plans_for("web", "qa") == (DEFAULT_PLAN,)


def test_namespace_names() -> None:
    assert parse_manifest(with_plan("") + "  - name: dev/sandbox\n    units:\n      - ref: web\n")
    e = only(with_plan("") + "  - name: qa2\n    units:\n      - ref: web\n")
    assert e.location == "namespaces[1].name" and "namespace name" in e.message


# -- keys Nelson does not know ------------------------------------------------------------------


def test_anchors_in_unknown_top_level_keys_are_warnings_and_merge() -> None:
    text = """
common: &common
  cpu: 1.0
  memory: 1024
  retries: 2
  expiration_policy: retain-latest
units:
  - name: crawler
    description: crawls
plans:
  - name: one
    schedule: once
    <<: *common
  - name: two
    schedule: "*/30 * * * *"
    <<: *common
namespaces:
  - name: dev
    units:
      - ref: crawler
        plans: [one, two]
"""
    manifest = parse_manifest(text)
    assert [p.retries for p in manifest.plans] == [2, 2]
    assert [w.location for w in manifest.warnings] == ["common"]
    assert "anchors" in manifest.warnings[0].message


def test_unknown_keys_inside_stanzas_stay_errors() -> None:
    found = problems(
        UNIT.replace("    ports:", "    port:\n      - x\n    ports:")
        + PLAN.format(extra="    retires: 2").replace("    units:", "    unit: []\n    units:")
    )
    assert "did you mean 'ports'" in found["units[0].port"]
    assert "did you mean 'retries'" in found["plans[0].retires"]
    assert "did you mean 'units'" in found["namespaces[0].unit"]
    found = problems(
        UNIT.replace("    ports:", "    retries: 2\n    ports:") + PLAN.format(extra="")
    )
    assert "belongs in a plan" in found["units[0].retries"]


def test_a_unit_without_description_is_a_warning() -> None:
    manifest = parse_manifest(
        UNIT.replace("    description: serves pages\n", "") + PLAN.format(extra="")
    )
    assert [w.location for w in manifest.warnings] == ["units[0].description"]


def test_duplicate_alerts_after_normalisation() -> None:
    text = UNIT.replace(
        "    ports:",
        "    alerting:\n      prometheus:\n        alerts:\n"
        "          - alert: HighLatency\n            expression: x > 1\n"
        "          - alert: high_latency\n            expression: x > 2\n    ports:",
    ) + PLAN.format(extra="")
    e = only(text)
    assert e.location == "units[0].alerting.prometheus.alerts[1]" and "twice" in e.message


# -- a complete manifest in Nelson's style ------------------------------------------------------

EVERYTHING = """
---
defaults: &small
  cpu: 0.5
  cpu_request: 0.25
  memory: 512
  memory_request: 256

units:
  - name: storefront
    description: the shop's web front
    ports:
      - default->8080/http
      - monitoring->7390/tcp
    dependencies:
      - ref: inventory@1.4
      - ref: pricing.v2@2.0
    resources:
      - name: s3
        description: product images
    meta:
      - shop
      - Frontend
    alerting:
      prometheus:
        alerts:
          - alert: instance_down
            expression: up == 0
          - alert: slow_pages
            expression: page_seconds > 1
        rules:
          - rule: "job:page_seconds:avg5m"
            expression: avg(rate(page_seconds[5m]))

  - name: indexer
    description: indexes the catalogue every half hour

plans:
  - name: shop-dev
    <<: *small
    instances:
      desired: 1
    alert_opt_outs:
      - slow_pages
    health_checks:
      - name: http-status
        port_reference: default
        protocol: https
        path: "v1/status"
        interval: "10 seconds"
        timeout: "2 seconds"
    resources:
      - ref: s3
        uri: https://s3.example.com/images-dev
    expiration_policy: retain-latest-two-major
    traffic_shift:
      policy: atomic
      duration: "5 minutes"
    volumes:
      - name: scratch
        mountPath: /tmp/scratch
        size: 500
    environment:
      - LOG_LEVEL=debug

  - name: shop-prod
    cpu: 2.0
    memory: 4096
    instances:
      desired: 6
    retries: 3
    health_checks:
      - name: http-status
        port_reference: default
        protocol: http
        path: /v1/status
    resources:
      - ref: s3
        uri: https://s3.example.com/images
    traffic_shift:
      policy: linear
      duration: "1 hour"
    constraints:
      - unique: [hostname]
        groupBy:
          - fieldName: zone
            param: 2
    workflow:
      kind: magnetar
      blueprint: shop-service@2

  - name: index-half-hourly
    schedule: "*/30 * * * *"
    cpu: 1.0
    memory: 1024
    retries: 2
    expiration_policy: retain-latest
    workflow:
      kind: pulsar
      blueprint: batch@HEAD

  - name: lb-plan
    instances:
      desired: 2

loadbalancers:
  - name: shop-lb
    routes:
      - name: http
        expose: default->8444/http
        destination: storefront->default
      - name: metrics
        expose: monitoring->8441/https
        destination: storefront->monitoring

namespaces:
  - name: dev
    units:
      - ref: storefront
        plans:
          - shop-dev
      - ref: indexer
        plans:
          - index-half-hourly
    loadbalancers:
      - ref: shop-lb
        plan: lb-plan
  - name: prod
    units:
      - ref: storefront
        plans:
          - shop-prod
      - ref: indexer

datacenters:
  except:
    - dc-legacy

notifications:
  email:
    recipients:
      - shop-team@example.com
  slack:
    channels:
      - shop-deploys
      - general
"""


def test_a_full_nelson_style_manifest() -> None:
    manifest = parse_manifest(EVERYTHING)
    assert isinstance(manifest, Manifest)
    assert [w.location for w in manifest.warnings] == ["defaults"]
    shop = manifest.unit("storefront")
    assert shop is not None
    assert [(d.unit, d.major, d.minor) for d in shop.dependencies] == [
        ("inventory", 1, 4),
        ("pricing.v2", 2, 0),
    ]
    assert shop.resources == (Resource("s3", "product images"),)
    assert shop.meta == ("shop", "Frontend")
    dev = manifest.plan("shop-dev")
    assert dev is not None
    assert (dev.cpu, dev.cpu_request, dev.memory, dev.memory_request) == (0.5, 0.25, 512, 256)
    assert dev.volumes == (Volume("scratch", "/tmp/scratch", 500),)
    assert dev.traffic_shift is not None and dev.traffic_shift.duration_seconds == 300
    assert dev.health_checks[0].path == "v1/status"
    prod = manifest.plan("shop-prod")
    assert prod is not None
    assert (prod.instances, prod.retries, prod.workflow, prod.blueprint) == (
        6,
        3,
        "magnetar",
        "shop-service@2",
    )
    assert prod.constraints == (
        Constraint("unique", "hostname"),
        Constraint("group_by", "zone", "2"),
    )
    assert prod.traffic_shift is not None and prod.traffic_shift.duration_seconds == 3600
    job = manifest.plan("index-half-hourly")
    assert job is not None and job.schedule is not None and job.blueprint == "batch@HEAD"
    assert manifest.unit_kind("indexer") == "service"  # prod runs it with the default plan
    assert manifest.plans_for("indexer", "prod") == (DEFAULT_PLAN,)
    namespace = manifest.namespace("dev")
    assert namespace is not None and namespace.loadbalancers[0].plan == "lb-plan"
    assert manifest.loadbalancers[0].routes[1].unit_port == "monitoring"
    assert manifest.notifications == Notifications(
        ("shop-deploys", "general"), ("shop-team@example.com",)
    )
    assert manifest.datacenters.allows("dc-east") and not manifest.datacenters.allows("dc-legacy")


@pytest.mark.parametrize("policy", ["gradual", "Linear"])
def test_traffic_shift_policy_is_linear_or_atomic(policy: str) -> None:
    e = only(with_plan(f"    traffic_shift:\n      policy: {policy!r}\n      duration: 5m\n"))
    assert e.location == "plans[0].traffic_shift.policy"
    assert f"'{policy}' is not linear or atomic" in e.message


def test_plan_policies_are_read_as_the_vocabulary() -> None:
    text = with_plan(
        "    expiration_policy: retain-latest\n"
        "    traffic_shift:\n      policy: atomic\n      duration: 5m\n"
    )
    plan = parse_manifest(text).plan("p")
    assert plan is not None and plan.traffic_shift is not None
    assert plan.traffic_shift.policy is ShiftPolicy.ATOMIC
    assert plan.expiration_policy is ExpirationPolicy.RETAIN_LATEST
