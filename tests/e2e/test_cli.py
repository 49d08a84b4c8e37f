"""The `nelson` command as a person runs it: a fresh working directory, the built-in config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.nelson.yml"))


def nelson(
    *args: str, cwd: Path, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("NELSON_", "SLACK_"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**full_env, "PYTHONPATH": str(ROOT)},
    )


def test_help_lists_subcommands(tmp_path: Path) -> None:
    result = nelson("--help", cwd=tmp_path)
    assert result.returncode == 0
    for sub in ("console", "run", "lint", "serve", "db"):
        assert sub in result.stdout


def test_run_exit_codes_and_sqlite_default(tmp_path: Path) -> None:
    ok = nelson("run", "datacenters", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "local" in ok.stdout and "127.0.0.1:5001" in ok.stdout
    assert (tmp_path / "nelson.db").is_file()
    bad = nelson("run", "deploi x 1.0.0", cwd=tmp_path)
    assert bad.returncode == 1
    assert "did you mean deploy?" in bad.stderr


def test_internal_error_exits_2_with_reference(tmp_path: Path) -> None:
    db_dir = tmp_path / "db"
    db_dir.mkdir()
    result = nelson(
        "run",
        "units",
        cwd=tmp_path,
        env={"NELSON_DATABASE_URL": f"sqlite:///{db_dir}/missing/dir/n.db"},
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_lint_examples_are_valid(tmp_path: Path, example: Path) -> None:
    result = nelson("lint", "manifest", str(example), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_examples_cover_dependencies_schedule_and_matrix() -> None:
    texts = "\n".join(p.read_text(encoding="utf-8") for p in EXAMPLES)
    assert "dependencies:" in texts and "schedule:" in texts
    assert len(EXAMPLES) >= 3


def test_lint_invalid_lists_every_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        'units:\n  - name: Bad_Name\n    ports: ["default->99999/http"]\n'
        "plans:\n  - name: p\n    memory: 0\nnamespaces:\n  - name: dev\n    units:\n"
        "      - ref: Bad_Name\n        plans: [p]\n",
        encoding="utf-8",
    )
    result = nelson("lint", "manifest", str(bad), cwd=tmp_path)
    assert result.returncode == 1
    assert "units[0].name" in result.stderr
    assert "plans[0].memory" in result.stderr
    assert "99999" in result.stderr


def test_lint_warnings_are_listed_and_exit_zero(tmp_path: Path) -> None:
    nelsonish = tmp_path / ".nelson.yml"
    nelsonish.write_text(
        "common: &small\n  cpu: 0.5\n  memory: 256\n"
        "units:\n  - name: web\n    description: d\n    ports: [default->9000/http]\n"
        "plans:\n  - name: p\n    <<: *small\n    traffic_shift:\n"
        '      policy: linear\n      duration: "5 minutes"\n'
        "namespaces:\n  - name: dev\n    units:\n      - ref: web\n        plans: [p]\n",
        encoding="utf-8",
    )
    result = nelson("lint", "manifest", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout and "1 warning" in result.stdout
    assert "common" in result.stdout


def test_console_reads_commands_and_registers_a_manifest(tmp_path: Path) -> None:
    example = ROOT / "examples" / "howdy-service.nelson.yml"
    script = f"help\ndatacenters\nmanifest acme/howdy {example}\nunits\nwhoami\nexit\n"
    result = nelson("console", cwd=tmp_path, stdin=script)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Nelson console" in out
    assert "Registered revision 1 of acme/howdy's manifest" in out
    assert "howdy-http" in out
    assert "view, deploy, approve, admin" in out


def test_deploy_without_engine_says_what_is_missing(tmp_path: Path) -> None:
    example = ROOT / "examples" / "accounts.nelson.yml"
    assert nelson("run", f"manifest acme/accounts {example}", cwd=tmp_path).returncode == 0
    nowhere = {"NELSON_DATACENTERS__LOCAL__SCHEDULER__ADDRESS": f"unix://{tmp_path}/no.sock"}
    result = nelson("run", "deploy accounts 1.0.0 to local", cwd=tmp_path, env=nowhere)
    assert result.returncode == 1
    assert "Cannot deploy to datacenter 'local' now" in result.stderr
    assert "start Docker (dockerd)" in result.stderr
    assert "datacenters.local.scheduler.address" in result.stderr
    listed = nelson("run", "stacks", cwd=tmp_path)
    assert "No stacks" in listed.stdout


def test_broken_config_is_one_clear_message(tmp_path: Path) -> None:
    cfg = tmp_path / "nelson.toml"
    cfg.write_text("[workflow]\nmax_concurrent = -1\n", encoding="utf-8")
    result = nelson("run", "help", cwd=tmp_path)
    assert result.returncode == 2
    assert "workflow.max_concurrent" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "SLACK_BOT_TOKEN is not set"),
        ({"SLACK_BOT_TOKEN": "xoxp-user-token"}, "should start with 'xoxb-'"),
        ({"SLACK_BOT_TOKEN": "xoxb-1"}, "SLACK_SIGNING_SECRET is not set"),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "hunter2"}, "32 hex characters"),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xoxb-2"}, "start with 'xapp-'"),
        (
            {
                "SLACK_BOT_TOKEN": "xoxb-1",
                "SLACK_SIGNING_SECRET": "0123456789abcdef0123456789abcdef",
                "SLACK_API_URL": "http://127.0.0.1:9/api/",
            },
            "cannot reach Slack at http://127.0.0.1:9/api/",
        ),
    ],
)
def test_serve_refuses_missing_or_malformed_tokens(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    result = nelson("serve", cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    for secret in ("xoxb-1", "xoxp-user-token", "hunter2", "0123456789abcdef"):
        assert secret not in result.stderr


def test_db_upgrade(tmp_path: Path) -> None:
    result = nelson("db", "upgrade", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "database at revision" in result.stdout


def test_config_shows_no_secrets(tmp_path: Path) -> None:
    result = nelson(
        "config",
        cwd=tmp_path,
        env={
            "NELSON_DATABASE_URL": "postgresql://nelson:hunter2@db.internal:5432/nelson",
            "SLACK_BOT_TOKEN": "xoxb-very-secret",
            "GITHUB_WEBHOOK_SECRET": "webhook-very-secret",
            "GITHUB_TOKEN": "ghp_verysecret",
        },
    )
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout and "xoxb-very-secret" not in result.stdout
    assert "webhook-very-secret" not in result.stdout and "ghp_verysecret" not in result.stdout
    assert '"webhook_secret": "**********"' in result.stdout
    assert "db.internal:5432" in result.stdout
