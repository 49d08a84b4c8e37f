"""Consul: its KV store (Lighthouse routing tables) and service health."""

from adapters.consul.client import ConsulClient, ConsulError

__all__ = ["ConsulClient", "ConsulError"]
