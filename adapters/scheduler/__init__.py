"""Schedulers: where stacks run."""

from adapters.scheduler.docker_engine import DockerEngine

__all__ = ["DockerEngine"]
