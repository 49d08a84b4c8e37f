"""Container registries over the OCI distribution API (v2)."""

from adapters.registry.oci import OciRegistry

__all__ = ["OciRegistry"]
