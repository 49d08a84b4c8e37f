"""Secrets: per-stack Vault policies and tokens."""

from adapters.secrets.vault import VaultSecrets

__all__ = ["VaultSecrets"]
