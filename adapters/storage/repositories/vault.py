"""`SqlVaultTokens`: the accessors of the Vault tokens of Docker-engine stacks."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    delete,
    insert,
    select,
    update,
)

from adapters.storage import tables as t
from adapters.storage.repositories.base import SqlRepository
from commands.repositories import VaultTokenRecord
from domain.states import StackStatus


class SqlVaultTokens(SqlRepository):
    async def record_vault_token(
        self, stack_id: int, policy: str, accessor: str, at: datetime
    ) -> str | None:
        table = t.vault_tokens
        async with self._begin() as conn:
            before = (
                await conn.execute(select(table.c.accessor).where(table.c.stack_id == stack_id))
            ).scalar_one_or_none()
            if before is None:
                await conn.execute(
                    insert(table).values(
                        stack_id=stack_id, policy=policy, accessor=accessor, issued_at=at
                    )
                )
            else:
                await conn.execute(
                    update(table)
                    .where(table.c.stack_id == stack_id)
                    .values(policy=policy, accessor=accessor, issued_at=at)
                )
        return None if before is None or before == accessor else str(before)

    async def vault_tokens(self, stack_id: int | None = None) -> list[VaultTokenRecord]:
        table = t.vault_tokens
        query = (
            select(table, t.stacks.c.name, t.stacks.c.datacenter, t.stacks.c.status)
            .join(t.stacks, t.stacks.c.id == table.c.stack_id)
            .order_by(table.c.stack_id)
        )
        if stack_id is not None:
            query = query.where(table.c.stack_id == stack_id)
        async with self._connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            VaultTokenRecord(
                r.stack_id,
                r.name,
                r.datacenter,
                StackStatus(r.status),
                r.policy,
                r.accessor,
                r.issued_at,
            )
            for r in rows
        ]

    async def forget_vault_token(self, stack_id: int, accessor: str) -> None:
        table = t.vault_tokens
        async with self._begin() as conn:
            await conn.execute(
                delete(table).where(table.c.stack_id == stack_id, table.c.accessor == accessor)
            )
