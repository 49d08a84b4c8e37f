"""The API tokens' part of the Store: a mixin of SqlStore, over the `api_tokens` table."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from adapters.storage import tables as t
from commands.ports import Conflict
from domain.api_tokens import ApiToken


def _token(row: Row[Any]) -> ApiToken:
    return ApiToken(
        name=row.name,
        digest=row.digest,
        namespaces=tuple(n for n in row.namespaces.split(",") if n),
        right=row.rights,
        created_by=row.created_by,
        created_at=row.created_at,
    )


class ApiTokenRows:
    """Needs `_begin()` and `_connect()` from the store it is mixed into."""

    def _begin(self) -> Any: ...  # pragma: no cover - provided by SqlStore

    def _connect(self) -> Any: ...  # pragma: no cover - provided by SqlStore

    async def create_api_token(self, token: ApiToken) -> None:
        try:
            async with self._begin() as conn:
                await conn.execute(
                    insert(t.api_tokens).values(
                        name=token.name,
                        digest=token.digest,
                        namespaces=",".join(token.namespaces),
                        rights=token.right,
                        created_by=token.created_by,
                        created_at=token.created_at,
                    )
                )
        except IntegrityError:
            raise Conflict(f"there is already a token named '{token.name}'") from None

    async def api_tokens(self) -> list[ApiToken]:
        async with self._connect() as conn:
            rows = (await conn.execute(select(t.api_tokens).order_by(t.api_tokens.c.name))).all()
        return [_token(r) for r in rows]

    async def api_token_by_digest(self, digest: str) -> ApiToken | None:
        query = select(t.api_tokens).where(t.api_tokens.c.digest == digest)
        async with self._connect() as conn:
            row = (await conn.execute(query)).first()
        return _token(row) if row else None

    async def revoke_api_token(self, name: str) -> bool:
        async with self._begin() as conn:
            gone = await conn.execute(delete(t.api_tokens).where(t.api_tokens.c.name == name))
        return bool(gone.rowcount)
