"""examples/compose.yaml: the bot built from this repository's Dockerfile, on PostgreSQL 16,
with the Slack tokens from an env file and the Docker socket for the `local` datacenter."""

from __future__ import annotations

from pathlib import Path

import yaml

from commands.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_compose_runs_the_bot_from_the_dockerfile_on_postgres() -> None:
    compose = yaml.safe_load((EXAMPLES / "compose.yaml").read_text(encoding="utf-8"))
    postgres, bot = compose["services"]["postgres"], compose["services"]["nelson"]
    assert postgres["image"] == "postgres:16"
    assert (EXAMPLES / bot["build"] / "Dockerfile").is_file()
    assert bot["env_file"] == "slack.env"
    assert (EXAMPLES / "slack.env.example").is_file()
    assert "/var/run/docker.sock:/var/run/docker.sock" in bot["volumes"]
    assert bot["depends_on"]["postgres"]["condition"] == "service_healthy"
    url = bot["environment"]["NELSON_DATABASE_URL"].replace("${NELSON_DB_PASSWORD}", "secret")
    user, database = (
        postgres["environment"]["POSTGRES_USER"],
        postgres["environment"]["POSTGRES_DB"],
    )
    assert url == f"postgresql://{user}:secret@127.0.0.1:5432/{database}"
    Settings.model_validate({"database_url": url})  # a URL the bot accepts
