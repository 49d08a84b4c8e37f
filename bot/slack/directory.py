"""Who a Slack user is, for access rules: their id, handle and user groups (ids and @handles).

Looked up with users.info and usergroups.list and cached for a few minutes. When Slack cannot
say (no `usergroups:read` scope, Slack down), the person is known by id only: rules that
name groups then do not match, so access fails closed."""

from __future__ import annotations

import logging
import time

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from commands.access import Principal

log = logging.getLogger("nelson.slack.directory")


class Directory:
    def __init__(self, client: AsyncWebClient, ttl: float = 300.0) -> None:
        self.client = client
        self.ttl = ttl
        self._names: dict[str, tuple[float, str]] = {}
        self._groups: tuple[float, dict[str, frozenset[str]]] | None = None

    async def principal(self, user_id: str, hint: str = "") -> Principal:
        name = await self._name(user_id) or hint
        groups = await self._memberships(user_id)
        return Principal(user_id=user_id, name=name, groups=groups)

    async def _name(self, user_id: str) -> str:
        now = time.monotonic()
        cached = self._names.get(user_id)
        if cached and now - cached[0] < self.ttl:
            return cached[1]
        try:
            response = await self.client.users_info(user=user_id)
        except SlackApiError as exc:
            log.warning("users.info %s: %s", user_id, exc.response.get("error"))
            return ""
        except Exception as exc:  # Slack unreachable: carry on with the id only
            log.warning("users.info %s: %r", user_id, exc)
            return ""
        user = response.get("user") or {}
        name = str(user.get("name") or "")
        self._names[user_id] = (now, name)
        return name

    async def _memberships(self, user_id: str) -> frozenset[str]:
        now = time.monotonic()
        if self._groups is None or now - self._groups[0] >= self.ttl:
            self._groups = (now, await self._load_groups())
        return self._groups[1].get(user_id, frozenset())

    async def _load_groups(self) -> dict[str, frozenset[str]]:
        try:
            response = await self.client.usergroups_list(include_users=True)
        except SlackApiError as exc:
            log.warning(
                "usergroups.list: %s; group rules will not match", exc.response.get("error")
            )
            return {}
        except Exception as exc:
            log.warning("usergroups.list: %r; group rules will not match", exc)
            return {}
        memberships: dict[str, set[str]] = {}
        for group in response.get("usergroups") or []:
            names = {str(group.get("id", ""))}
            if group.get("handle"):
                names.add(f"@{group['handle']}")
            for member in group.get("users") or []:
                memberships.setdefault(str(member), set()).update(names)
        return {user: frozenset(names) for user, names in memberships.items()}
