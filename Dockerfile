# syntax=docker/dockerfile:1
# dtf images: the broker and the workers (docs/deploy.md).
#
#   docker build --target broker -t dtf-broker .
#   docker build --target worker -t dtf-worker .           (the default target)
#   docker build --target worker-browser -t dtf-worker-browser .
#   docker build -f Dockerfile.cuda -t dtf-worker-cuda .   (GPU workers, on NVIDIA's CUDA runtime)
#
# Every install step is deploy/docker/install.sh, which tests/deploy runs in a clean venv.
# Configuration: flags after the image name (both), /etc/dtf/broker.toml (broker), and the
# environment (worker: DTF_BROKER, DTF_CURVE_SECRET, DTF_BROKER_KEY, DTF_ALIVE_FILE).

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# ---- build: wheels of dtf and every dependency (nothing is compiled in the runtime stages)
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY dtf_bus ./dtf_bus
COPY plugins ./plugins
COPY bokeh_app ./bokeh_app
COPY configs ./configs
COPY deploy/docker ./deploy/docker
RUN deploy/docker/install.sh wheels /src /wheels \
 && deploy/docker/install.sh configs /src /etc/dtf

# ---- runtime: a venv in /opt/dtf, a non-root user, tini as PID 1 (it forwards SIGTERM, which
# makes a worker drain, and reaps the orphans of tasks' process groups)
FROM ${PYTHON_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/dtf --create-home --shell /usr/sbin/nologin dtf
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    --mount=type=bind,from=build,source=/src/deploy/docker/install.sh,target=/tmp/install.sh \
    /tmp/install.sh venv /wheels /opt/dtf
COPY --from=build /etc/dtf /etc/dtf
ENV PATH=/opt/dtf/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /var/lib/dtf
USER 10001:10001

# ---- the broker: DuckDB file on the volume; ROUTER, PUB and HTTP ports
FROM runtime AS broker
VOLUME ["/var/lib/dtf"]
EXPOSE 5555 5556 8585
# With CURVE, set DTF_CURVE_SECRET and DTF_BROKER_KEY to the broker's own key files for this check.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["dtf", "ping", "--timeout", "5"]
ENTRYPOINT ["tini", "--", "dtf-broker", "--config", "/etc/dtf/broker.toml"]

# ---- a worker: SIGTERM drains (finish running tasks, deliver results, exit)
FROM runtime AS worker-browser
USER 0
RUN apt-get update \
 && apt-get install -y --no-install-recommends chromium fonts-liberation \
 && rm -rf /var/lib/apt/lists/*
USER 10001:10001
ENV DTF_ALIVE_FILE=/tmp/dtf-worker.alive
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 CMD ["dtf", "ping", "--alive-file", "/tmp/dtf-worker.alive"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--", "dtf-worker"]

FROM runtime AS worker
ENV DTF_ALIVE_FILE=/tmp/dtf-worker.alive
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 CMD ["dtf", "ping", "--alive-file", "/tmp/dtf-worker.alive"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--", "dtf-worker"]
