"""The typed configuration handlers read. Loading (files, environment) lives in bot.config."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from domain import expiration
from domain.durations import parse_duration

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_NAMESPACE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(/[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
_TIME_OF_DAY = re.compile(r"^(\d{1,2}):(\d{2})$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _port_range(value: str) -> str:
    low, _, high = value.partition("-")
    if not (low.isdigit() and high.isdigit() and 0 < int(low) <= int(high) < 65536):
        raise ValueError(f"'{value}' is not a port range like 20000-20999")
    return value


def port_bounds(value: str) -> tuple[int, int]:
    low, _, high = value.partition("-")
    return int(low), int(high)


class NomadTLS(_Model):
    """How to reach a Nomad cluster over TLS (paths to PEM files)."""

    ca_cert: str | None = None  # the cluster's CA; default: the system's trusted CAs
    client_cert: str | None = None  # mutual TLS (`verify_https_client` on the agents)
    client_key: str | None = None
    skip_verify: bool = False  # never in production: accepts any server certificate

    @model_validator(mode="after")
    def _pair(self) -> NomadTLS:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together: set both or neither")
        return self


class SchedulerSettings(_Model):
    kind: Literal["docker", "nomad", "kubernetes"] = "docker"
    address: str = "unix:///var/run/docker.sock"
    # nomad: an ACL token (X-Nomad-Token); from NELSON_DATACENTERS__<DC>__SCHEDULER__TOKEN
    token: SecretStr | None = None
    # docker: the host ports instances get (containers share the host's network); below
    # Linux's ephemeral range, so no outgoing connection holds one
    ports: str = "30000-32767"
    # nomad: the region and Nomad namespace jobs go to (default: the agent's own), and TLS
    region: str | None = None
    namespace: str | None = None
    tls: NomadTLS | None = None

    @field_validator("ports")
    @classmethod
    def _ports(cls, value: str) -> str:
        return _port_range(value)

    @model_validator(mode="before")
    @classmethod
    def _nomad_address(cls, data: object) -> object:
        # Docker's default socket means nothing to Nomad: default to the agent's own port.
        if isinstance(data, dict) and data.get("kind") == "nomad" and "address" not in data:
            return {**data, "address": "http://127.0.0.1:4646"}
        return data

    @model_validator(mode="after")
    def _kind_options(self) -> SchedulerSettings:
        if self.kind == "nomad":
            scheme, _, rest = self.address.partition("://")
            if scheme not in ("http", "https") or not rest.strip("/"):
                raise ValueError(
                    f"'{self.address}' is not a Nomad address; write it like http://host:4646"
                )
            if "@" in rest.split("/", 1)[0]:
                raise ValueError(
                    "a Nomad address must not carry credentials; set the ACL token in "
                    "NELSON_DATACENTERS__<DC>__SCHEDULER__TOKEN instead"
                )
            if self.tls is not None and scheme != "https":
                raise ValueError("tls options need an https:// Nomad address")
        elif self.tls is not None or self.region is not None or self.namespace is not None:
            raise ValueError("region, namespace and tls apply to Nomad schedulers only")
        return self


class VaultSettings(_Model):
    """How the bot reaches one datacenter's Vault. Secrets (token, secret_id) come from the
    environment (NELSON_DATACENTERS__<DC>__VAULT__TOKEN, …) and are never shown."""

    address: str
    auth: Literal["token", "approle", "kubernetes"] = "token"
    token: SecretStr | None = None  # auth = token
    role_id: str | None = None  # auth = approle
    secret_id: SecretStr | None = None
    role: str | None = None  # auth = kubernetes: the Vault role the bot logs in as
    jwt_path: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    auth_mount: str | None = None  # where approle / kubernetes is mounted (default: its kind)
    # Nelson's template for a resource's credentials; %env% is the root namespace
    creds_path: str = "nelson/%env%/%resource%/creds/%unit%"
    # Docker datacenters: stacks' tokens are periodic; the bot renews them well within this
    token_period: timedelta = timedelta(hours=1)
    timeout: float = Field(default=10.0, gt=0, le=300)  # seconds per call

    @field_validator("token_period", mode="before")
    @classmethod
    def _duration(cls, value: object) -> timedelta:
        period = parse_duration(value)
        if period < timedelta(minutes=1):
            raise ValueError("token_period must be at least 1m (the bot renews at a third of it)")
        return period

    @field_validator("creds_path")
    @classmethod
    def _creds_path(cls, value: str) -> str:
        if "%resource%" not in value:
            raise ValueError(
                f"creds_path '{value}' must contain %resource% (and usually %env% and %unit%)"
            )
        return value.strip("/")

    @model_validator(mode="after")
    def _credentials(self) -> VaultSettings:
        if self.auth == "approle" and (self.role_id is None or self.secret_id is None):
            raise ValueError("auth = approle needs role_id and secret_id")
        if self.auth == "kubernetes" and not self.role:
            raise ValueError("auth = kubernetes needs role (the Vault role to log in as)")
        return self


class ConsulSettings(_Model):
    """One datacenter's Consul agent; the ACL token comes from the environment."""

    address: str
    token: SecretStr | None = None
    datacenter: str | None = None  # Consul's own datacenter name, when it differs
    timeout: float = Field(default=10.0, gt=0, le=300)


class RouterSettings(_Model):
    # lighthouse: routing tables in the datacenter's Consul KV (datacenters.<dc>.consul)
    kind: Literal["haproxy", "lighthouse"] = "haproxy"
    address: str = ""  # haproxy: its state directory (default .nelson/haproxy/<datacenter>)
    bind: str = "127.0.0.1"  # where route frontends listen
    ports: str = "20000-20999"  # the frontend ports routes get, one per unit major version

    @field_validator("ports")
    @classmethod
    def _ports(cls, value: str) -> str:
        return _port_range(value)


class DatacenterSettings(_Model):
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    staging_registry: str
    runtime_registry: str
    vault: VaultSettings | None = None
    consul: ConsulSettings | None = None
    router: RouterSettings | None = None

    @model_validator(mode="after")
    def _lighthouse_needs_consul(self) -> DatacenterSettings:
        if self.router is not None and self.router.kind == "lighthouse" and self.consul is None:
            raise ValueError("router kind 'lighthouse' needs this datacenter's consul settings")
        return self

    @model_validator(mode="after")
    def _registries_differ(self) -> DatacenterSettings:
        # Staging takes CI's mass writes, runtime the cluster's mass pulls: keep them apart.
        if self.staging_registry.rstrip("/") == self.runtime_registry.rstrip("/"):
            raise ValueError("staging_registry and runtime_registry must be different registries")
        return self


class RegistryCredentials(_Model):
    """A user name and password (or token) for one registry, keyed by its host[:port]."""

    username: str
    password: SecretStr


class AccessRule(_Model):
    """Who may do what in the namespaces matching `namespace` (a name or a glob like `dev/*`).

    Principals: Slack user ids (U…, W…), user group ids (S…) or handles (@team), local user
    names, or `*` for everyone."""

    namespace: str = "*"
    view: tuple[str, ...] = ()
    deploy: tuple[str, ...] = ()
    approve: tuple[str, ...] = ()
    admin: tuple[str, ...] = ()


class AccessSettings(_Model):
    admins: tuple[str, ...] = ()
    rules: tuple[AccessRule, ...] = (AccessRule(namespace="*", view=("*",)),)


class ApprovalSettings(_Model):
    """How traffic migrations in a namespace are approved."""

    needed: bool = True
    required: int = Field(default=1, ge=1, le=10)
    approvers: tuple[str, ...] = ()  # empty: whoever the access rules let approve
    allow_self_approval: bool = False
    deadline: timedelta = timedelta(hours=4)
    rollbacks: bool = False  # `rollback` asks for approval too (otherwise it acts at once)
    remind_before: timedelta | None = None  # tell the approvers this long before the deadline

    @field_validator("deadline", mode="before")
    @classmethod
    def _duration(cls, value: object) -> timedelta:
        return parse_duration(value)

    @field_validator("remind_before", mode="before")
    @classmethod
    def _reminder(cls, value: object) -> timedelta | None:
        return None if value is None else parse_duration(value)


class FreezeWindow(_Model):
    """A scheduled freeze: every week on `days` (UTC) from `start` to `end` (`24:00`: midnight;
    an end at or before the start runs into the next day), deploys and traffic shifts into
    `namespace` (and the namespaces nested in it) at `datacenters` (empty: all) are refused."""

    namespace: str
    days: tuple[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], ...] = Field(min_length=1)
    start: str = "00:00"
    end: str = "24:00"
    datacenters: tuple[str, ...] = ()
    reason: str = "scheduled freeze window"

    @field_validator("start", "end")
    @classmethod
    def _time_of_day(cls, value: str) -> str:
        match = _TIME_OF_DAY.match(value)
        if value != "24:00" and (
            match is None or int(match.group(1)) > 23 or int(match.group(2)) > 59
        ):
            raise ValueError(f"'{value}' is not a time of day like 09:00 or 24:00 (UTC)")
        return value

    @staticmethod
    def minutes(value: str) -> int:
        hour, _, minute = value.partition(":")
        return int(hour) * 60 + int(minute)


class SlackSettings(_Model):
    bot_token: SecretStr | None = None
    signing_secret: SecretStr | None = None
    app_token: SecretStr | None = None
    api_url: str | None = None
    operations_channel: str | None = None
    host: str = "0.0.0.0"
    port: int = Field(default=3000, ge=0, le=65535)
    # seconds between posts to one channel, and between updates of messages and Home tabs
    post_interval: float = Field(default=1.0, ge=0, le=60)
    update_interval: float = Field(default=1.2, ge=0, le=60)
    # seconds between checks for approvals whose deadline passed
    approvals_sweep: float = Field(default=30.0, gt=0, le=3600)


class WorkflowSettings(_Model):
    max_concurrent: int = Field(default=4, ge=1, le=256)
    warming_timeout: timedelta = timedelta(minutes=5)
    image_template: str = "{staging_registry}/{unit}:{version}"
    step_timeout: timedelta = timedelta(minutes=10)  # any one call to a registry or scheduler
    attempts: int = Field(default=4, ge=1, le=20)  # tries of a step that fails transiently
    health_interval: timedelta = timedelta(seconds=2)
    # How long a replica's claim on a stack's workflow lasts unless renewed (every third of it):
    # the work of a replica that died is taken over by another within about 1⅓ of this.
    claim_ttl: timedelta = timedelta(seconds=15)

    @field_validator(
        "warming_timeout", "step_timeout", "health_interval", "claim_ttl", mode="before"
    )
    @classmethod
    def _duration(cls, value: object) -> timedelta:
        return parse_duration(value)

    @field_validator("claim_ttl")
    @classmethod
    def _claim_ttl(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= value <= timedelta(minutes=10):
            raise ValueError("must be between 1 s and 10 min")
        return value

    @field_validator("image_template")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            value.format(staging_registry="r", unit="u", version="1.0.0")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"unknown placeholder {exc}; use {{staging_registry}}, {{unit}} and {{version}}"
            ) from None
        return value


class TrafficSettings(_Model):
    step_interval: timedelta = timedelta(seconds=5)  # how often weights move during a shift
    unhealthy_threshold: int = Field(default=3, ge=1, le=100)  # failed probes before reverse
    # how long a replica's lease on a route's shift lasts unrenewed (at least 3 steps)
    lease_ttl: timedelta = timedelta(seconds=15)

    @field_validator("step_interval", "lease_ttl", mode="before")
    @classmethod
    def _duration(cls, value: object) -> timedelta:
        return parse_duration(value)


class LifecycleSettings(_Model):
    new_stack_grace: timedelta = timedelta(minutes=30)
    garbage_grace: timedelta = timedelta(hours=24)
    interval: timedelta = timedelta(minutes=5)
    # the daily digest of what will be removed (UTC, HH:MM), the least time between that
    # announcement and the removal, and how long "Keep" keeps a stack
    announce_at: str = "09:00"
    notice: timedelta = timedelta(hours=4)
    keep_for: timedelta = timedelta(hours=24)
    # how far a pass pushes back the expiry of a stack its policy retains (at least three
    # intervals, so a pass or two missed never lets a retained stack expire)
    extension: timedelta = timedelta(minutes=30)

    @field_validator(
        "new_stack_grace",
        "garbage_grace",
        "interval",
        "notice",
        "keep_for",
        "extension",
        mode="before",
    )
    @classmethod
    def _duration(cls, value: object) -> timedelta:
        return parse_duration(value)

    @field_validator("announce_at")
    @classmethod
    def _time_of_day(cls, value: str) -> str:
        match = _TIME_OF_DAY.match(value)
        if match is None or int(match.group(1)) > 23 or int(match.group(2)) > 59:
            raise ValueError(f"'{value}' is not a time of day like 09:00 (UTC)")
        return value

    def removal_at(self, garbage_since: datetime, announced_at: datetime | None) -> datetime | None:
        """When garbage may be removed under these graces (None until it was announced)."""
        return expiration.removal_at(garbage_since, announced_at, self.garbage_grace, self.notice)

    @property
    def extension_step(self) -> timedelta:
        """What a pass adds to a retained stack's expiry: `extension`, at least 3 intervals."""
        return max(self.extension, self.interval * 3)

    @property
    def announce_time(self) -> tuple[int, int]:
        hour, _, minute = self.announce_at.partition(":")
        return int(hour), int(minute)


class ApiSettings(_Model):
    """The HTTP API for CI under /v1/ (docs/api.md), served by `nelson serve` with or
    without Slack; callers authenticate with tokens from `token create`."""

    enabled: bool = True


class GitHubSettings(_Model):
    """GitHub webhooks at /github/events (docs/api.md). Without `webhook_secret` every
    delivery is refused."""

    webhook_secret: SecretStr | None = None  # the webhook's secret, for X-Hub-Signature-256
    # a token that may read release assets and write deployment statuses (fine-grained:
    # Contents read, Deployments read and write)
    token: SecretStr | None = None
    api_url: str = "https://api.github.com"
    # the namespaces webhooks may deploy to; a GitHub environment is the namespace of the
    # same name unless `environments` maps it (`production = "prod"`)
    namespaces: tuple[str, ...] = ()
    environments: dict[str, str] = Field(default_factory=dict)
    # repository (owner/name) -> path of its manifest here, for releases without one attached
    manifests: dict[str, str] = Field(default_factory=dict)

    def namespace_for(self, environment: str) -> str:
        return self.environments.get(environment, environment)


class ConsoleSettings(_Model):
    user: str = "local"  # the identity console and `nelson run` act as, for access rules


class Settings(_Model):
    database_url: str = "sqlite:///nelson.db"
    default_namespace: str = "dev"
    namespaces: tuple[str, ...] = ("dev", "qa", "prod")
    datacenters: dict[str, DatacenterSettings] = Field(default_factory=dict)
    manifest_dirs: tuple[str, ...] = ()
    registry_credentials: dict[str, RegistryCredentials] = Field(default_factory=dict)
    access: AccessSettings = Field(default_factory=AccessSettings)
    approvals: dict[str, ApprovalSettings] = Field(default_factory=dict)
    slack: SlackSettings = Field(default_factory=SlackSettings)
    workflow: WorkflowSettings = Field(default_factory=WorkflowSettings)
    traffic: TrafficSettings = Field(default_factory=TrafficSettings)
    lifecycle: LifecycleSettings = Field(default_factory=LifecycleSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    github: GitHubSettings = Field(default_factory=GitHubSettings)
    freezes: tuple[FreezeWindow, ...] = ()  # scheduled freeze windows

    @field_validator("namespaces")
    @classmethod
    def _namespaces(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _NAMESPACE.match(name):
                raise ValueError(f"'{name}' is not a valid namespace name (a-z, 0-9, '-', '/')")
        if len(set(value)) != len(value):
            raise ValueError("namespaces are listed more than once")
        return value

    @field_validator("datacenters")
    @classmethod
    def _datacenter_names(
        cls, value: dict[str, DatacenterSettings]
    ) -> dict[str, DatacenterSettings]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"'{name}' is not a valid datacenter name (a-z, 0-9, '-')")
        return value

    @model_validator(mode="after")
    def _references(self) -> Settings:
        if self.default_namespace not in self.namespaces:
            raise ValueError(
                f"default_namespace '{self.default_namespace}' is not one of the namespaces "
                f"({', '.join(self.namespaces)})"
            )
        for name in self.approvals:
            if name not in self.namespaces:
                raise ValueError(f"approvals.{name}: '{name}' is not a configured namespace")
        for name in (*self.github.namespaces, *self.github.environments.values()):
            if name not in self.namespaces:
                raise ValueError(f"github: '{name}' is not a configured namespace")
        for index, window in enumerate(self.freezes):
            if window.namespace not in self.namespaces:
                raise ValueError(
                    f"freezes[{index}]: '{window.namespace}' is not a configured namespace"
                )
            unknown = [dc for dc in window.datacenters if dc not in self.datacenters]
            if unknown:
                raise ValueError(
                    f"freezes[{index}]: no datacenter named {', '.join(unknown)} is configured"
                )
        return self

    def approval_for(self, namespace: str) -> ApprovalSettings:
        """The namespace's rule, else its parent's (`dev/sandbox` -> `dev`), else the default."""
        return self.approval_rule(namespace)[1]

    def approval_rule(self, namespace: str) -> tuple[str, ApprovalSettings]:
        """The rule that applies to `namespace` and its name, for messages (`approvals.prod`)."""
        name: str | None = namespace
        while name:
            if name in self.approvals:
                return f"approvals.{name}", self.approvals[name]
            name = name.rpartition("/")[0] or None
        return "the default approval rule", ApprovalSettings()
