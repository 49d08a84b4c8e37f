"""Routers: how callers reach the stacks of a unit."""

from adapters.router.haproxy import HaproxyRouter

__all__ = ["HaproxyRouter"]
