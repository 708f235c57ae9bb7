# syntax=docker/dockerfile:1
# The serving runtime: `modelplane runtime` (and `modelplane prepare-model`, its init container).
# CPU:  docker build -f deploy/docker/runtime.Dockerfile -t modelplane-runtime:0.1.0 .
# CUDA: docker build -f deploy/docker/runtime.Dockerfile --build-arg VARIANT=cuda -t modelplane-runtime:0.1.0-cuda .
# VARIANT picks the torch wheel index: cpu, or cuda (the default PyPI wheel, which brings the CUDA
# libraries with it, so the base image needs no CUDA toolkit; the node's driver is enough).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
COPY operator ./operator
COPY serving ./serving
COPY deploy/devcluster ./deploy/devcluster
RUN case "${VARIANT}" in \
      cpu) index="https://download.pytorch.org/whl/cpu" ;; \
      cuda) index="https://pypi.org/simple" ;; \
      *) echo "VARIANT must be cpu or cuda, not ${VARIANT}" >&2; exit 2 ;; \
    esac \
 && python -m venv /opt/modelplane \
 && /opt/modelplane/bin/pip install --index-url "${index}" "torch==2.13.0" \
 && /opt/modelplane/bin/pip install . \
 && find /opt/modelplane -name '__pycache__' -type d -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
ARG VARIANT=cpu
LABEL org.opencontainers.image.title="modelplane-runtime" \
      org.opencontainers.image.description="Modelplane V2 (HTTP and gRPC) torch serving runtime (${VARIANT})" \
      org.opencontainers.image.source="https://github.com/modelplane/modelplane" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/modelplane/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY --from=build /opt/modelplane /opt/modelplane
USER 65532:65532
WORKDIR /tmp
EXPOSE 8000 8001
ENTRYPOINT ["modelplane"]
CMD ["runtime", "--help"]
