# syntax=docker/dockerfile:1
# One image for the Flujo operator (`flujo-operator`, the default command) and
# the step-runner pods it launches (`flujo step-run`), and `flujo run` too.
#
#   docker build -t ghcr.io/flujo/flujo:0.1.0 .
#   docker run --rm ghcr.io/flujo/flujo:0.1.0 flujo --help
#
# Stage 1 builds the project and its dependencies into a virtualenv; stage 2
# copies only that virtualenv onto the same slim Python base: no compiler,
# no pip, no source tree, a non-root numeric user (10001, the UID the
# operator's step pods run as).

ARG PYTHON_VERSION=3.11.14
ARG DEBIAN_RELEASE=bookworm

FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# Only what the wheel is built from (see .dockerignore).
COPY pyproject.toml README.md ./
COPY flujo ./flujo
COPY operator ./operator

# The virtualenv has no pip of its own: the builder's pip installs into it.
RUN python -m venv --without-pip /opt/flujo \
    && python -m pip --python /opt/flujo/bin/python install --no-cache-dir "./[operator]" \
    && /opt/flujo/bin/flujo --help >/dev/null \
    && /opt/flujo/bin/python -c "import flujo_operator.handlers"


FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="flujo" \
      org.opencontainers.image.description="Flujo: AI-agent pipelines; the Kubernetes operator and the step runner" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="https://github.com/flujo/flujo" \
      org.opencontainers.image.url="https://github.com/flujo/flujo" \
      org.opencontainers.image.documentation="https://github.com/flujo/flujo/tree/main/docs" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="flujo"

# No package manager tooling for Python at run time, and a numeric non-root user.
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
    && groupadd --gid 10001 flujo \
    && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin flujo

COPY --from=builder --chown=0:0 /opt/flujo /opt/flujo

ENV PATH=/opt/flujo/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp

WORKDIR /tmp
USER 10001:10001

# The operator's liveness/readiness endpoint (FLUJO_HEALTH_PORT); no
# HEALTHCHECK: Kubernetes probes /healthz.
EXPOSE 8080

CMD ["flujo-operator"]
