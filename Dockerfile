# Nelson chat-ops: the Slack bot as a container image.
#
#   docker build -t nelson-chatops .
#   docker run --rm --env-file slack.env -p 3000:3000 -v nelson-data:/data nelson-chatops
#
# Build arguments:
#   BASE            the Python base image of both stages (default python:3.12-slim). Any
#                   Debian-based image with python3 and its venv module works.
#   PIP_NO_INDEX, PIP_FIND_LINKS
#                   where pip finds packages: PyPI by default. For a build without network,
#                   put wheels of every dependency in ./wheelhouse (`pip download -d wheelhouse
#                   …`, see tests/imagebuild.py) and pass PIP_NO_INDEX=1
#                   PIP_FIND_LINKS=/src/wheelhouse.
ARG BASE=python:3.12-slim

# -- build: the project's wheel and every dependency, installed into a virtualenv -----------
FROM ${BASE} AS build
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# .dockerignore lets in only the sources a wheel is built from (and ./wheelhouse, if any).
COPY . .
RUN python3 -m venv /opt/nelson \
 && /opt/nelson/bin/pip wheel --wheel-dir /wheels . \
 && /opt/nelson/bin/pip install --no-index --find-links /wheels nelson-chatops \
 && /opt/nelson/bin/pip uninstall --yes pip \
 && /opt/nelson/bin/python -m compileall -q /opt/nelson/lib

# -- runtime: Python, the virtualenv, and the Debian tools the bot runs --------------------
FROM ${BASE} AS runtime
# graphviz draws `graph` pictures; haproxy is the router of datacenters that have one;
# ca-certificates lets the bot reach Slack over TLS. Only what the base lacks is installed
# (a base that already has them needs no network here).
RUN set -eu; \
    missing=""; \
    for package in graphviz haproxy ca-certificates; do \
      dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $package"; \
    done; \
    if [ -n "$missing" ]; then \
      apt-get update; \
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing; \
      apt-get clean; rm -rf /var/lib/apt/lists/*; \
    fi; \
    useradd --system --uid 10001 --user-group --home-dir /data --no-create-home nelson; \
    mkdir -p /data && chown nelson:nelson /data
COPY --from=build /opt/nelson /opt/nelson
ENV PATH=/opt/nelson/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="nelson-chatops" \
      org.opencontainers.image.description="A Slack bot that deploys containers to datacenters and runs their whole lifecycle" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE}"
USER nelson
# The default configuration keeps its SQLite database (nelson.db) and the HAProxy state
# (.nelson/) in the working directory: mount a volume here.
WORKDIR /data
VOLUME ["/data"]
EXPOSE 3000
# The health check asks /healthz (the database answers) on port 3000, or NELSON_HEALTH_PORT
# when the bot serves on another port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('NELSON_HEALTH_PORT', '3000'), timeout=4)"]
# SIGTERM (docker stop): the bot stops taking requests, lets each deploy finish the step it
# is in, and exits 0; the next start continues the rest.
STOPSIGNAL SIGTERM
ENTRYPOINT ["nelson"]
CMD ["serve", "--port", "3000"]
