# syntax=docker/dockerfile:1
# The control components: operator, registry, router and the CLI, one image, entrypoint `modelplane`.
# The chart runs e.g. `modelplane operator ...`, `modelplane registry serve ...`, `modelplane router ...`.
# Build from the repository root:  docker build -f deploy/docker/control.Dockerfile -t modelplane:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# A C compiler for the router's compiled request path (setup.py, MODELPLANE_COMPILE=1).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY src ./src
COPY operator ./operator
COPY serving ./serving
COPY deploy/devcluster ./deploy/devcluster
# The control plane never runs a model: the CPU-only torch wheel keeps the image small. The package
# is installed twice: first for its dependencies (which mypyc type-checks against), then rebuilt
# with the router's request path compiled; mypy is only a build tool and leaves again.
RUN python -m venv /opt/modelplane \
 && /opt/modelplane/bin/pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
 && /opt/modelplane/bin/pip install . "mypy==2.4.1" "setuptools>=77" wheel \
 && MODELPLANE_COMPILE=1 /opt/modelplane/bin/pip install --no-deps --no-build-isolation --force-reinstall . \
 && /opt/modelplane/bin/pip uninstall -y mypy \
 && find /opt/modelplane -name '__pycache__' -type d -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="modelplane" \
      org.opencontainers.image.description="Modelplane operator, registry, router and CLI" \
      org.opencontainers.image.source="https://github.com/modelplane/modelplane" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/modelplane/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/modelplane /opt/modelplane
# The restricted Pod Security Standard runs it as this numeric non-root user with a read-only root.
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["modelplane"]
CMD ["--help"]
