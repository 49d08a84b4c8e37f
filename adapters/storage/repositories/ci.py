"""`SqlCiRecords`: what CI systems hold here: API tokens (`api_tokens`, their digests only)
and the GitHub deployments the bot reports on (`github_deployments`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from adapters.storage import tables as t
from adapters.storage.repositories.base import SqlRepository
from commands.ports import Conflict
from domain.api_tokens import ApiToken
from domain.github import GitHubDeployment


def _token(row: Row[Any]) -> ApiToken:
    return ApiToken(
        name=row.name,
        digest=row.digest,
        namespaces=tuple(n for n in row.namespaces.split(",") if n),
        right=row.rights,
        created_by=row.created_by,
        created_at=row.created_at,
    )


class SqlCiRecords(SqlRepository):
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

    async def record_github_deployment(self, deployment: GitHubDeployment) -> None:
        table = t.github_deployments
        try:
            async with self._begin() as conn:
                await conn.execute(
                    insert(table).values(
                        repository=deployment.repository,
                        deployment_id=deployment.deployment_id,
                        environment=deployment.environment,
                        stack_ids=",".join(str(i) for i in deployment.stack_ids),
                        created_at=deployment.created_at,
                        reported=deployment.reported,
                    )
                )
        except IntegrityError:
            raise Conflict(
                f"GitHub deployment {deployment.deployment_id} of {deployment.repository} "
                "is already recorded"
            ) from None

    async def unreported_github_deployments(self) -> list[GitHubDeployment]:
        table = t.github_deployments
        query = (
            select(table)
            .where(table.c.reported.is_(None))
            .order_by(table.c.created_at, table.c.repository, table.c.deployment_id)
        )
        async with self._connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            GitHubDeployment(
                repository=r.repository,
                deployment_id=r.deployment_id,
                environment=r.environment,
                stack_ids=tuple(int(i) for i in r.stack_ids.split(",") if i),
                created_at=r.created_at,
                reported=r.reported,
            )
            for r in rows
        ]

    async def github_deployment_reported(
        self, repository: str, deployment_id: int, state: str
    ) -> None:
        table = t.github_deployments
        async with self._begin() as conn:
            await conn.execute(
                update(table)
                .where(table.c.repository == repository, table.c.deployment_id == deployment_id)
                .values(reported=state)
            )
