import re
from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_builtin_defaults_have_a_local_datacenter_and_sqlite() -> None:
    settings, source = load_settings(environ={})
    assert source == "built-in defaults"
    assert settings.database_url.startswith("sqlite:///")
    assert list(settings.datacenters) == ["local"]
    assert settings.default_namespace == "dev"


def test_example_file_is_valid() -> None:
    settings, _ = load_settings(str(ROOT / "nelson.example.toml"), environ={})
    assert set(settings.datacenters) == {"dc-east", "dc-west"}
    assert settings.datacenters["dc-west"].scheduler.kind == "nomad"
    assert settings.approval_for("prod").required == 2
    assert settings.approval_for("dev").needed is False


def test_nested_namespace_inherits_approval_rule(tmp_path: Path) -> None:
    cfg = tmp_path / "n.toml"
    cfg.write_text(
        'namespaces = ["dev", "dev/sandbox"]\n[approvals.dev]\nrequired = 3\n', encoding="utf-8"
    )
    settings, _ = load_settings(str(cfg), environ={})
    assert settings.approval_for("dev/sandbox").required == 3


def test_environment_overrides_any_key(tmp_path: Path) -> None:
    env = {
        "NELSON_DATABASE_URL": "sqlite:///other.db",
        "NELSON_WORKFLOW__MAX_CONCURRENT": "9",
        "NELSON_DATACENTERS__LOCAL__RUNTIME_REGISTRY": "127.0.0.1:6000",
        "NELSON_NAMESPACES": '["dev", "prod"]',
        "SLACK_BOT_TOKEN": "xoxb-secret-value",
        "NELSON_TEST_SOMETHING": "not ours",
    }
    settings, _ = load_settings(environ=env)
    assert settings.database_url == "sqlite:///other.db"
    assert settings.workflow.max_concurrent == 9
    assert settings.datacenters["local"].runtime_registry == "127.0.0.1:6000"
    assert settings.namespaces == ("dev", "prod")
    assert settings.slack.bot_token is not None
    assert settings.slack.bot_token.get_secret_value() == "xoxb-secret-value"
    assert "xoxb-secret-value" not in settings.model_dump_json()


def test_environment_override_matches_hyphenated_names(tmp_path: Path) -> None:
    cfg = tmp_path / "n.toml"
    cfg.write_text(
        '[datacenters.dc-east]\nstaging_registry = "a:1"\nruntime_registry = "b:1"\n',
        encoding="utf-8",
    )
    settings, _ = load_settings(
        str(cfg), environ={"NELSON_DATACENTERS__DC_EAST__RUNTIME_REGISTRY": "c:1"}
    )
    assert settings.datacenters["dc-east"].runtime_registry == "c:1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[workflow]\nmax_concurent = 3\n", "workflow.max_concurent: is not a setting"),
        ("[workflow]\nmax_concurrent = 0\n", "workflow.max_concurrent: Input should be greater"),
        ('default_namespace = "nope"\n', "default_namespace 'nope' is not one of the namespaces"),
        ('[lifecycle]\ngarbage_grace = "soon"\n', "'soon' is not a duration"),
        (
            '[datacenters.x]\nstaging_registry = "r:1"\nruntime_registry = "r:1"\n',
            "must be different registries",
        ),
        (
            '[datacenters.X_Y]\nstaging_registry = "a"\nruntime_registry = "b"\n',
            "'X_Y' is not a valid",
        ),
        ('[workflow]\nimage_template = "{registry}/{unit}"\n', "unknown placeholder 'registry'"),
        ("[approvals.staging]\nrequired = 1\n", "approvals.staging: 'staging' is not a configured"),
    ],
)
def test_broken_config_names_key_and_problem(tmp_path: Path, text: str, expected: str) -> None:
    cfg = tmp_path / "n.toml"
    cfg.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(str(cfg), environ={})
    assert expected in str(info.value)
    assert str(cfg) in str(info.value)


def test_syntax_errors_are_reported_with_position(tmp_path: Path) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text("database_url = \n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(str(toml), environ={})
    yml = tmp_path / "bad.yml"
    yml.write_text("namespaces: [dev\n  qa: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+, column \d+"):
        load_settings(str(yml), environ={})


def test_yaml_config_and_env_error_names_variable(tmp_path: Path) -> None:
    yml = tmp_path / "n.yaml"
    yml.write_text("namespaces: [dev, qa]\ndefault_namespace: qa\n", encoding="utf-8")
    settings, _ = load_settings(str(yml), environ={})
    assert settings.default_namespace == "qa"
    with pytest.raises(ConfigError, match="NELSON_WORKFLOW__MAX_CONCURRENT"):
        load_settings(str(yml), environ={"NELSON_WORKFLOW__MAX_CONCURRENT": "lots"})


def test_missing_file_is_one_clear_message(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(str(tmp_path / "absent.toml"), environ={})


def test_vault_and_consul_secrets_come_from_the_environment_and_are_never_shown(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "n.toml"
    cfg.write_text(
        '[datacenters.dc-east]\nstaging_registry = "a:1"\nruntime_registry = "b:1"\n'
        'vault = { address = "http://127.0.0.1:8200", auth = "approle", role_id = "r" }\n'
        'consul = { address = "http://127.0.0.1:8500" }\n',
        encoding="utf-8",
    )
    settings, _ = load_settings(
        str(cfg),
        environ={
            "NELSON_DATACENTERS__DC_EAST__VAULT__SECRET_ID": "approle-secret-value",
            "NELSON_DATACENTERS__DC_EAST__CONSUL__TOKEN": "consul-token-value",
        },
    )
    dc = settings.datacenters["dc-east"]
    assert dc.vault is not None and dc.vault.secret_id is not None
    assert dc.vault.secret_id.get_secret_value() == "approle-secret-value"
    assert dc.vault.creds_path == "nelson/%env%/%resource%/creds/%unit%"
    assert dc.consul is not None and dc.consul.token is not None
    shown = settings.model_dump_json() + repr(settings)
    assert "approle-secret-value" not in shown and "consul-token-value" not in shown


@pytest.mark.parametrize(
    ("vault", "expected"),
    [
        (
            '{ address = "http://v", auth = "approle" }',
            "auth = approle needs role_id and secret_id",
        ),
        ('{ address = "http://v", auth = "kubernetes" }', "auth = kubernetes needs role"),
        ('{ address = "http://v", creds_path = "x/%unit%" }', "must contain %resource%"),
        ('{ address = "http://v", token_period = "10s" }', "token_period must be at least 1m"),
    ],
)
def test_vault_settings_are_checked(tmp_path: Path, vault: str, expected: str) -> None:
    cfg = tmp_path / "n.toml"
    cfg.write_text(
        f'[datacenters.x]\nstaging_registry = "a"\nruntime_registry = "b"\nvault = {vault}\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_settings(str(cfg), environ={})


def test_lighthouse_router_needs_consul(tmp_path: Path) -> None:
    cfg = tmp_path / "n.toml"
    cfg.write_text(
        '[datacenters.x]\nstaging_registry = "a"\nruntime_registry = "b"\n'
        'router = { kind = "lighthouse" }\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="needs this datacenter's consul settings"):
        load_settings(str(cfg), environ={})
