"""Schedulers: where stacks run."""

from adapters.scheduler.docker_engine import DockerEngine
from adapters.scheduler.nomad import NomadScheduler

__all__ = ["DockerEngine", "NomadScheduler"]
