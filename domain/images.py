"""Image references: `registry/repository:tag` or `registry/repository@sha256:…`."""

from __future__ import annotations

import re
from dataclasses import dataclass

_DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-fA-F0-9]{32,}$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_REPOSITORY = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)


class BadImageReference(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ImageRef:
    registry: str  # host[:port], or a URL base like https://host
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What goes after /manifests/: the digest when known, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        host = self.registry.split("://", 1)[-1].rstrip("/")
        if self.digest:
            return f"{host}/{self.repository}@{self.digest}"
        return f"{host}/{self.repository}:{self.tag or 'latest'}"


def parse_image(text: str) -> ImageRef:
    original = text.strip()
    rest = original
    scheme = ""
    if "://" in rest:
        scheme, rest = rest.split("://", 1)
        scheme += "://"
    digest = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.match(digest):
            raise BadImageReference(f"'{original}': '{digest}' is not a digest (sha256:…)")
    host, _, path = rest.partition("/")
    if not path or not ("." in host or ":" in host or host == "localhost"):
        raise BadImageReference(
            f"'{original}' names no registry; write it as registry/repository:tag "
            "(for example 127.0.0.1:5000/howdy-http:1.2.3)"
        )
    tag = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
        if not _TAG.match(tag):
            raise BadImageReference(f"'{original}': '{tag}' is not a valid tag")
    if not _REPOSITORY.match(path):
        raise BadImageReference(f"'{original}': '{path}' is not a valid repository name")
    if tag is None and digest is None:
        tag = "latest"
    return ImageRef(scheme + host, path, tag, digest)
