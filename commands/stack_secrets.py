"""Each stack's Vault policy and, on Docker-engine datacenters, its token.

At the workflow's `secrets` step (`grant`) the stack gets the policy Nelson names
`nelson__<root namespace>__<stack name>`, granting `read` on the credentials path of every
resource its unit declares (`datacenters.<dc>.vault.creds_path`). A scheduler with its own
Vault integration (Nomad) only needs the policy's name for its job's Vault stanza; the
Docker engine has none, so the bot creates a periodic, renewable orphan token limited to that
policy and hands it to the containers (VAULT_ADDR, VAULT_TOKEN). The database keeps only the
token's accessor; `tend` renews the tokens of live stacks and revokes what is left of
stacks that are gone; `release` (reaping, a failed deploy) revokes the token and deletes the
policy. A grant that fails half-way undoes what it wrote before it reports the failure."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from commands.ports import Clock, Secrets, SecretsError, SecretsStatus
from commands.repositories import StackRepository, VaultTokenRepository
from commands.settings import Settings
from domain.records import Stack
from domain.states import StackStatus

log = logging.getLogger("nelson.secrets")

# stacks whose tokens are no longer wanted (what `tend` revokes)
_GONE = (StackStatus.FAILED, StackStatus.TERMINATED)


def policy_name(stack: Stack) -> str:
    """Nelson's name for a stack's policy: nelson__<root namespace>__<stack name>."""
    return f"nelson__{stack.namespace.split('/')[0]}__{stack.name}"


def creds_paths(template: str, stack: Stack, resources: Sequence[str]) -> list[str]:
    root = stack.namespace.split("/")[0]
    return [
        template.replace("%env%", root).replace("%unit%", stack.unit).replace("%resource%", r)
        for r in sorted(set(resources))
    ]


@dataclass(frozen=True)
class Grant:
    policy: str
    environment: tuple[tuple[str, str], ...] = field(repr=False)  # holds the token
    replaced: bool = False  # an earlier token of this stack was revoked: restart its instances


@dataclass
class TendReport:
    renewed: int = 0
    expired: list[str] = field(default_factory=list)  # stacks whose token was already gone
    revoked: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


class _SecretsStore(StackRepository, VaultTokenRepository, Protocol):
    """The stacks (to find them and log to them) and their Vault tokens."""


class StackSecrets:
    def __init__(
        self,
        settings: Settings,
        store: _SecretsStore,
        clock: Clock,
        vaults: Mapping[str, Secrets],
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.vaults = dict(vaults)

    def configured(self, datacenter: str) -> bool:
        return datacenter in self.vaults

    async def status(self, datacenter: str) -> SecretsStatus | None:
        vault = self.vaults.get(datacenter)
        return None if vault is None else await vault.status()

    async def grant(self, stack: Stack, resources: Sequence[str], *, token: bool) -> Grant:
        """Write the stack's policy and, with `token`, issue its token. Idempotent: a second
        grant (after a restart) rewrites the policy and replaces the token."""
        vault = self.vaults[stack.datacenter]
        settings = self.settings.datacenters[stack.datacenter].vault
        assert settings is not None
        name = policy_name(stack)
        environment: list[tuple[str, str]] = [("NELSON_VAULT_POLICYNAME", name)]
        replaced = False
        for old in await self.store.vault_tokens(stack.id):
            await vault.revoke(old.accessor)  # containers holding it are restarted
            await self.store.forget_vault_token(stack.id, old.accessor)
            replaced = True
        existed = await vault.policy(name) is not None
        await vault.write_policy(name, creds_paths(settings.creds_path, stack, resources))
        if not token:
            return Grant(name, tuple(environment), replaced)
        try:
            issued = await vault.issue_token(
                name, int(settings.token_period.total_seconds()), stack.name
            )
        except SecretsError:
            if not existed:
                await self._undo(stack, name, None)
            raise
        try:
            await self.store.record_vault_token(stack.id, name, issued.accessor, self.clock.now())
        except Exception:
            await self._undo(stack, name if not existed else None, issued.accessor)
            raise
        environment += [("VAULT_ADDR", issued.address), ("VAULT_TOKEN", issued.token)]
        return Grant(name, tuple(environment), replaced)

    async def release(self, stack: Stack) -> bool:
        """Revoke the stack's token and delete its policy; whether there was anything to
        remove. Raises SecretsError when Vault cannot do it now (the caller retries later)."""
        vault = self.vaults.get(stack.datacenter)
        if vault is None:
            return False
        removed = False
        for record in await self.store.vault_tokens(stack.id):
            await vault.revoke(record.accessor)
            await self.store.forget_vault_token(stack.id, record.accessor)
            removed = True
        name = policy_name(stack)
        if await vault.policy(name) is not None:
            await vault.delete_policy(name)
            removed = True
        return removed

    async def policy(self, stack: Stack) -> tuple[str, str | None] | None:
        """(name, text or None when Vault has none) for `inspect`; None without Vault."""
        vault = self.vaults.get(stack.datacenter)
        if vault is None:
            return None
        name = policy_name(stack)
        return name, await vault.policy(name)

    async def tend(self) -> TendReport:
        """Renew the tokens of live stacks; revoke the tokens and delete the policies of
        stacks that failed or were terminated (a release that could not finish then)."""
        report = TendReport()
        for record in await self.store.vault_tokens():
            vault = self.vaults.get(record.datacenter)
            if vault is None:
                continue
            try:
                if record.status in _GONE:
                    await vault.revoke(record.accessor)
                    await vault.delete_policy(record.policy)
                    await self.store.forget_vault_token(record.stack_id, record.accessor)
                    report.revoked.append(record.stack)
                elif await vault.renew(record.accessor):
                    report.renewed += 1
                else:
                    await self.store.forget_vault_token(record.stack_id, record.accessor)
                    report.expired.append(record.stack)
                    await self.store.append_log(
                        record.stack_id,
                        "its Vault token expired before it could be renewed: redeploy to get "
                        "a new one",
                        step="secrets",
                        at=self.clock.now(),
                    )
            except SecretsError as exc:
                report.failed.append((record.stack, str(exc)))
        for datacenter, vault in self.vaults.items():
            try:
                await self._sweep_policies(datacenter, vault, report)
            except SecretsError as exc:
                report.failed.append((f"policies in {datacenter}", str(exc)))
        return report

    async def _sweep_policies(self, datacenter: str, vault: Secrets, report: TendReport) -> None:
        """Delete the policies of this datacenter's failed and terminated stacks that are
        still there (a failed deploy whose Vault was down); policies of stacks this bot does
        not know are left alone: they may be another installation's."""
        for name in await vault.policies():
            if not name.startswith("nelson__") or name.count("__") < 2:
                continue
            stack = await self.store.stack(name.split("__", 2)[2])
            if stack is None or stack.datacenter != datacenter or stack.status not in _GONE:
                continue
            if policy_name(stack) != name or await self.store.vault_tokens(stack.id):
                continue
            await vault.delete_policy(name)
            report.revoked.append(stack.name)

    async def close(self) -> None:
        for vault in self.vaults.values():
            try:
                await vault.close()
            except Exception as exc:  # closing is best effort
                log.debug("closing a Vault client failed: %s", exc)

    async def _undo(self, stack: Stack, policy: str | None, accessor: str | None) -> None:
        """Best effort: what cannot be undone now is found again by `tend` or reaping."""
        vault = self.vaults[stack.datacenter]
        try:
            if accessor is not None:
                await vault.revoke(accessor)
            if policy is not None:
                await vault.delete_policy(policy)
        except SecretsError as exc:
            log.warning("could not undo the half-done grant of %s: %s", stack.name, exc)
