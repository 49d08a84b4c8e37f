"""The Secrets port on Vault, through hvac.

hvac is synchronous (requests): each call runs in a worker thread, one at a time per Vault
(a requests session is not meant to be shared between threads), with the configured timeout.
The bot authenticates with a token, an AppRole or a Kubernetes service account; after an
AppRole or Kubernetes login expires, one refused call logs in again and is retried.

Vault's answers become `SecretsError`s that say what happened in words people can act on:
sealed, unreachable, permission denied (with the path the bot's token needs), or a server
error (transient: the workflow retries it). Tokens never appear in messages."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import hvac
import hvac.exceptions as vault_errors
import requests

from commands.ports import IssuedToken, SecretsError, SecretsStatus
from commands.settings import VaultSettings

T = TypeVar("T")

_TRANSIENT = (
    vault_errors.InternalServerError,
    vault_errors.BadGateway,
    vault_errors.RateLimitExceeded,
    vault_errors.UnexpectedError,
)


def policy_text(stack: str, read_paths: Sequence[str]) -> str:
    """The ACL policy of one stack, after Nelson's: nothing under sys/, the token may look
    itself up, renew and revoke itself, and read each resource's credentials."""
    lines = [
        f"# written by Nelson for stack {stack}",
        'path "sys/*" {\n  capabilities = ["deny"]\n}',
        'path "auth/token/lookup-self" {\n  capabilities = ["read"]\n}',
        'path "auth/token/renew-self" {\n  capabilities = ["update"]\n}',
        'path "auth/token/revoke-self" {\n  capabilities = ["update"]\n}',
    ]
    for path in sorted(set(read_paths)):
        if '"' in path or "\n" in path:
            raise SecretsError(f"'{path}' cannot be a Vault path (quotes or line breaks)")
        lines.append(f'path "{path}" {{\n  capabilities = ["read"]\n}}')
    return "\n\n".join(lines) + "\n"


def shown_address(address: str) -> str:
    """scheme://host:port, without any credentials the configured URL may carry."""
    parts = urlsplit(address)
    host = parts.hostname or address
    return f"{parts.scheme}://{host}:{parts.port}" if parts.port else f"{parts.scheme}://{host}"


class VaultSecrets:
    def __init__(
        self,
        settings: VaultSettings,
        datacenter: str,
        *,
        read_file: Callable[[str], str] | None = None,
    ) -> None:
        self.settings = settings
        self.datacenter = datacenter
        self.shown = shown_address(settings.address)
        self._client = hvac.Client(url=settings.address, timeout=settings.timeout)
        self._logged_in = settings.auth == "token"
        if settings.auth == "token" and settings.token is not None:
            self._client.token = settings.token.get_secret_value()
        self._read_file = read_file or (lambda path: Path(path).read_text().strip())
        self._lock = asyncio.Lock()

    # -- the port -------------------------------------------------------------------------

    async def status(self) -> SecretsStatus:
        try:
            seal = await self._run("read the seal status", self._client.sys.read_seal_status)
        except SecretsError as exc:
            return SecretsStatus(False, None, str(exc))
        version = seal.get("version", "?")
        if seal.get("sealed"):
            return SecretsStatus(True, True, f"sealed (Vault {version})")
        try:
            await self._authed("look up its own token", self._client.auth.token.lookup_self)
        except SecretsError as exc:
            return SecretsStatus(True, False, f"unsealed (Vault {version}), but {exc}")
        return SecretsStatus(True, False, f"unsealed (Vault {version})")

    async def write_policy(self, name: str, read_paths: Sequence[str]) -> None:
        text = policy_text(name, read_paths)
        await self._authed(
            f"write the policy {name}",
            lambda: self._client.sys.create_or_update_acl_policy(name=name, policy=text),
            needs=f"update on sys/policies/acl/{name}",
        )

    async def policy(self, name: str) -> str | None:
        try:
            answer = await self._authed(
                f"read the policy {name}",
                lambda: self._client.sys.read_acl_policy(name=name),
                needs=f"read on sys/policies/acl/{name}",
            )
        except _Missing:
            return None
        data = answer.get("data") or answer
        text = data.get("policy")
        return str(text) if text is not None else None

    async def delete_policy(self, name: str) -> None:
        try:
            await self._authed(
                f"delete the policy {name}",
                lambda: self._client.sys.delete_acl_policy(name=name),
                needs=f"delete on sys/policies/acl/{name}",
            )
        except _Missing:
            return

    async def issue_token(self, policy: str, period_seconds: int, stack: str) -> IssuedToken:
        # an orphan: the stack's token must outlive the bot's own login token
        answer = await self._authed(
            f"create a token for {stack}",
            lambda: self._client.auth.token.create_orphan(
                policies=[policy],
                no_default_policy=True,
                renewable=True,
                period=f"{period_seconds}s",
                display_name=stack,
                meta={"nelson_stack": stack, "nelson_datacenter": self.datacenter},
            ),
            needs="update and sudo on auth/token/create-orphan",
        )
        auth = answer.get("auth") or {}
        token, accessor = auth.get("client_token"), auth.get("accessor")
        if not token or not accessor:
            raise SecretsError(f"Vault at {self.shown} created a token but returned no accessor")
        return IssuedToken(str(token), str(accessor), self.settings.address)

    async def renew(self, accessor: str) -> bool:
        try:
            await self._authed(
                "renew a stack's token",
                lambda: self._client.auth.token.renew_accessor(accessor),
                needs="update on auth/token/renew-accessor",
            )
        except _Missing:
            return False
        return True

    async def revoke(self, accessor: str) -> None:
        try:
            await self._authed(
                "revoke a stack's token",
                lambda: self._client.auth.token.revoke_accessor(accessor),
                needs="update on auth/token/revoke-accessor",
            )
        except _Missing:
            return

    async def policies(self) -> list[str]:
        try:
            answer = await self._authed(
                "list the policies",
                self._client.sys.list_acl_policies,
                needs="list on sys/policies/acl",
            )
        except _Missing:
            return []
        data = answer.get("data") or answer
        return [str(k) for k in data.get("keys", [])]

    async def close(self) -> None:
        await asyncio.to_thread(self._client.adapter.close)

    # -- calls ----------------------------------------------------------------------------

    async def _authed(self, what: str, call: Callable[[], Any], needs: str = "") -> Any:
        async with self._lock:
            if not self._logged_in:
                await self._login()
            try:
                return await self._call(what, call, needs)
            except _Refused:
                if self.settings.auth == "token":
                    raise self._refused(what, needs) from None
            await self._login()  # the login token may have expired: once more, freshly
            try:
                return await self._call(what, call, needs)
            except _Refused:
                raise self._refused(what, needs) from None

    async def _run(self, what: str, call: Callable[[], T]) -> T:
        async with self._lock:
            try:
                return await self._call(what, call, "")
            except _Refused:
                raise self._refused(what, "") from None

    async def _login(self) -> None:
        settings = self.settings
        if settings.auth == "approle":
            assert settings.role_id is not None and settings.secret_id is not None
            role_id, secret_id = settings.role_id, settings.secret_id.get_secret_value()

            def login() -> Any:
                return self._client.auth.approle.login(
                    role_id=role_id,
                    secret_id=secret_id,
                    mount_point=settings.auth_mount or "approle",
                )
        else:
            try:
                jwt = await asyncio.to_thread(self._read_file, settings.jwt_path)
            except OSError as exc:
                raise SecretsError(
                    f"cannot log in to Vault at {self.shown}: the service account token "
                    f"{settings.jwt_path} cannot be read ({exc.strerror or exc})"
                ) from None

            def login() -> Any:
                return self._client.auth.kubernetes.login(
                    role=settings.role, jwt=jwt, mount_point=settings.auth_mount or "kubernetes"
                )

        try:
            await self._call(f"log in ({settings.auth})", login, "")
        except (_Refused, _Missing):
            raise SecretsError(
                f"Vault at {self.shown} refused the bot's {settings.auth} login: check its "
                "role and credentials"
            ) from None
        self._logged_in = True

    async def _call(self, what: str, call: Callable[[], T], needs: str) -> T:
        try:
            return await asyncio.to_thread(call)
        except vault_errors.Forbidden:
            raise _Refused() from None
        except vault_errors.Unauthorized:
            raise _Refused() from None
        except vault_errors.InvalidPath:
            raise _Missing() from None
        except vault_errors.InvalidRequest as exc:
            reasons = _reasons(exc)
            if any("invalid accessor" in r or "not found" in r for r in reasons):
                raise _Missing() from None
            hint = ""
            if needs and any("subset of parent" in r or "sudo" in r for r in reasons):
                hint = f"; the bot's Vault identity needs {needs}"
            raise SecretsError(
                f"Vault at {self.shown} rejected the request to {what}: {'; '.join(reasons)}{hint}"
            ) from None
        except vault_errors.VaultDown as exc:
            reasons = _reasons(exc)
            if any("sealed" in r for r in reasons):
                raise SecretsError(
                    f"Vault at {self.shown} is sealed: it cannot {what} until it is unsealed"
                ) from None
            raise SecretsError(
                f"Vault at {self.shown} is unavailable (503) and could not {what}",
                transient=True,
            ) from None
        except vault_errors.VaultNotInitialized:
            raise SecretsError(f"Vault at {self.shown} is not initialized") from None
        except _TRANSIENT as exc:
            raise SecretsError(
                f"Vault at {self.shown} failed to {what}: {'; '.join(_reasons(exc))}",
                transient=True,
            ) from None
        except requests.exceptions.Timeout:
            raise SecretsError(
                f"Vault at {self.shown} did not answer within {self.settings.timeout:g}s "
                f"(trying to {what})",
                transient=True,
            ) from None
        except requests.exceptions.ConnectionError:
            raise SecretsError(
                f"Vault at {self.shown} cannot be reached (trying to {what})", transient=True
            ) from None

    def _refused(self, what: str, needs: str) -> SecretsError:
        hint = f"; the bot's Vault identity needs {needs}" if needs else ""
        return SecretsError(f"Vault at {self.shown} refused to {what}: permission denied{hint}")


class _Refused(Exception):
    """403 or 401 from Vault (turned into a SecretsError after a possible fresh login)."""


class _Missing(Exception):
    """404, or an accessor Vault does not know: what was asked for is already gone."""


def _reasons(exc: vault_errors.VaultError) -> list[str]:
    errors = exc.errors
    if isinstance(errors, list) and errors:
        return [str(e) for e in errors]
    if isinstance(errors, str) and errors:
        return [errors]
    if exc.text:
        return [str(exc.text).strip()[:200]]
    return [exc.__class__.__name__]
