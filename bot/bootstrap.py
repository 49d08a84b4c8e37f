"""The one place that builds adapters and hands them to the handlers."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from adapters.clock import SystemClock
from adapters.consul import ConsulClient
from adapters.registry import OciRegistry
from adapters.registry.oci import Credentials
from adapters.router import HaproxyRouter
from adapters.router.lighthouse import LighthouseRouter
from adapters.scheduler import DockerEngine, NomadScheduler
from adapters.secrets import VaultSecrets
from adapters.storage import open_store
from bot.conversation import Conversation
from bot.manifest_dirs import register_directories
from bot.outage import is_outage
from commands.approval_desk import ApprovalDesk
from commands.context import Services
from commands.deploy_workflow import DeployWorkflow
from commands.event_outbox import EventJournal
from commands.events import EventHub
from commands.lifecycle import Lifecycle
from commands.manifests import Manifests
from commands.operations import OperationTracker
from commands.ports import Clock, Registry, Router, Scheduler, Secrets, Store, WorkflowPort
from commands.rollback import Rollbacks
from commands.settings import Settings, port_bounds
from commands.shifting import TrafficControl
from commands.stack_secrets import StackSecrets


@dataclass
class Application:
    settings: Settings
    clock: Clock
    store: Store
    conversation: Conversation
    events: EventHub
    desk: ApprovalDesk
    workflow: WorkflowPort
    journal: EventJournal | None = None  # the outbox the hub writes chat's events to
    deploys: DeployWorkflow | None = None
    registry: Registry | None = None
    schedulers: dict[str, Scheduler] = field(default_factory=dict)
    traffic: TrafficControl | None = None
    routers: dict[str, Router] = field(default_factory=dict)
    lifecycle: Lifecycle | None = None
    secrets: StackSecrets | None = None
    consuls: dict[str, ConsulClient] = field(default_factory=dict)

    async def start(self) -> int:
        """Continue the workflows an earlier run left unfinished; returns how many."""
        return await self.deploys.resume() if self.deploys is not None else 0

    async def close(self) -> None:
        if self.deploys is not None:
            await self.deploys.close()
        if self.traffic is not None:  # `nelson run` stepping a shift leaves no lease behind
            with contextlib.suppress(Exception):
                await self.traffic.release_leases()
        for scheduler in self.schedulers.values():
            with contextlib.suppress(Exception):
                await scheduler.close()
        for router in self.routers.values():
            with contextlib.suppress(Exception):
                await router.close()
        if self.secrets is not None:
            await self.secrets.close()
        for consul in self.consuls.values():
            with contextlib.suppress(Exception):
                await consul.close()
        if self.registry is not None:
            await self.registry.close()
        await self.store.close()


def schedulers_for(
    settings: Settings, consuls: dict[str, ConsulClient] | None = None
) -> dict[str, Scheduler]:
    """One adapter per datacenter whose scheduler kind this version drives (a Nomad
    datacenter with Consul registers its services there and reads their health from it)."""
    found: dict[str, Scheduler] = {}
    for name, dc in settings.datacenters.items():
        if dc.scheduler.kind == "docker":
            found[name] = DockerEngine(
                dc.scheduler.address, name, ports=port_bounds(dc.scheduler.ports)
            )
        elif dc.scheduler.kind == "nomad":
            found[name] = NomadScheduler(dc.scheduler, name, consul=(consuls or {}).get(name))
    return found


def routers_for(settings: Settings, store: Store) -> dict[str, Router]:
    """HAProxy routers: projections of the route table in the database."""
    found: dict[str, Router] = {}
    for name, dc in settings.datacenters.items():
        if dc.router is not None and dc.router.kind == "haproxy":
            found[name] = HaproxyRouter(
                dc.router.address or Path(".nelson") / "haproxy" / name,
                store,
                datacenter=name,
                bind=dc.router.bind,
                ports=port_bounds(dc.router.ports),
            )
    return found


def vaults_for(settings: Settings) -> dict[str, Secrets]:
    return {
        name: VaultSecrets(dc.vault, name)
        for name, dc in settings.datacenters.items()
        if dc.vault is not None
    }


def consuls_for(settings: Settings) -> dict[str, ConsulClient]:
    return {
        name: ConsulClient(dc.consul)
        for name, dc in settings.datacenters.items()
        if dc.consul is not None
    }


def lighthouses_for(
    settings: Settings, store: Store, consuls: dict[str, ConsulClient]
) -> dict[str, Router]:
    """Routers of kind `lighthouse`: routing tables in the datacenter's Consul KV."""
    found: dict[str, Router] = {}
    for name, dc in settings.datacenters.items():
        if dc.router is not None and dc.router.kind == "lighthouse" and name in consuls:
            found[name] = LighthouseRouter(
                consuls[name],
                store,
                datacenter=name,
                bind=dc.router.bind,
                ports=port_bounds(dc.router.ports),
                fences=store,
            )
    return found


async def build(
    settings: Settings, *, workflow: WorkflowPort | None = None, clock: Clock | None = None
) -> Application:
    """Open the store and wire the handlers to the adapters the configuration names.
    `workflow` and `clock` replace the defaults (embedders and tests choose their own)."""
    clock = clock or SystemClock()  # the program's one clock, handed to all that read time
    store = await open_store(settings.database_url, clock=clock, upgrade=True)
    manifests = Manifests(store, settings)  # the one reader of manifests, shared by all
    await register_directories(settings, store, manifests)
    # Chat's events go to the outbox when a Slack replica may tell them (any process of the
    # configuration, `nelson run` included: a serving replica tells what it wrote).
    journal = EventJournal(store) if settings.slack.bot_token is not None else None
    events = EventHub(journal)
    # Subscriptions, in the order listeners hear an event: the application's own first.
    events.subscribe(OperationTracker(store, events, clock).on_event)
    deploys: DeployWorkflow | None = None
    registry: Registry | None = None
    schedulers: dict[str, Scheduler] = {}
    routers: dict[str, Router] = {}
    traffic: TrafficControl | None = None
    secrets: StackSecrets | None = None
    consuls = consuls_for(settings)
    desk = ApprovalDesk(settings, store, events, clock)
    if workflow is None:
        registry = OciRegistry(
            {
                host: Credentials(c.username, c.password.get_secret_value())
                for host, c in settings.registry_credentials.items()
            }
        )
        schedulers = schedulers_for(settings, consuls)
        vaults = vaults_for(settings)
        secrets = StackSecrets(settings, store, clock, vaults) if vaults else None
        deploys = DeployWorkflow(
            settings,
            store,
            events,
            clock,
            registry,
            schedulers,
            manifests=manifests,
            secrets=secrets,
            unreachable=is_outage,
        )
        routers = routers_for(settings, store)
        routers.update(lighthouses_for(settings, store, consuls))
        traffic = TrafficControl(
            settings,
            store,
            events,
            clock,
            desk,
            routers,
            schedulers,
            deploys.runtime,
            manifests=manifests,
        )
        events.subscribe(traffic.on_event)  # routes ready stacks, acts on approvals
        events.subscribe(Rollbacks(traffic).on_event)  # carries out approved rollbacks
        workflow = deploys
    # The cleanup needs the datacenters' schedulers and routers, which only the product's own
    # deploy workflow drives; an embedder's workflow brings none, so nothing would be removed there.
    lifecycle: Lifecycle | None = None
    if deploys is not None:
        lifecycle = Lifecycle(
            settings,
            store,
            events,
            clock,
            schedulers,
            routers,
            manifests=manifests,
            stack_secrets=secrets,
        )
    services = Services(
        settings=settings,
        store=store,
        workflow=workflow,
        clock=clock,
        events=events,
        traffic=traffic,
        lifecycle=lifecycle,
        secrets=secrets,
        consuls=consuls,
        manifests=manifests,
        desk=desk,
    )
    conversation = Conversation(services)
    return Application(
        settings=settings,
        clock=clock,
        store=store,
        conversation=conversation,
        events=events,
        desk=desk,
        journal=journal,
        workflow=workflow,
        deploys=deploys,
        registry=registry,
        schedulers=schedulers,
        traffic=traffic,
        routers=routers,
        lifecycle=lifecycle,
        secrets=secrets,
        consuls=consuls,
    )
