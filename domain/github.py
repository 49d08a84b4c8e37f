"""What the bot remembers of a GitHub deployment it works on: enough to report its outcome
to GitHub, also after a restart."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class GitHubDeployment:
    repository: str  # owner/name
    deployment_id: int
    environment: str
    stack_ids: tuple[int, ...]
    created_at: datetime
    reported: str | None = None  # the final state told to GitHub, once told
