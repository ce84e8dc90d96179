# syntax=docker/dockerfile:1
# The application image: the `hymirec` CLI with this repository installed (serving adapter `hymirec serve`, stream
# processor `hymirec stream run`, the Airflow task code) plus the DAG files in /opt/hymirec/dags.
#
#   docker build -f images/app.Dockerfile -t registry.example.com/hymirec/hymirec:0.1.0 .
#
# Python packages: exactly requirements/app.lock (`make lock`), installed with --require-hashes and --no-deps, so
# nothing unpinned can slip in. BASE must be a Debian bookworm image with python3.11 and its venv module
# (python:3.11-slim-bookworm in production; the tests pass a local debootstrap image, devservices/images.py).
# Runs as uid/gid 10001, the chart's podSecurityContext; nothing in the image is writable by that user but /tmp and
# its home, so it works under readOnlyRootFilesystem with the chart's /tmp emptyDir.
ARG BASE=docker.io/library/python:3.11-slim-bookworm
FROM ${BASE}

# Empty: pip fetches the locked wheels from PyPI. A directory: a wheelhouse mounted there for the build only
# (devservices/images.py bind-mounts .cache/images/wheels at /tmp/wheels), installed offline; never in a layer.
ARG WHEELS=""

ENV VIRTUAL_ENV=/opt/hymirec/venv \
    PATH=/opt/hymirec/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/hymirec \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/hymirec/dags

# The install is split into layers by size, largest and most stable first: the CUDA libraries PyPI's torch links
# (~2.8 GB), torch (~1.2 GB), the other locked packages (~1.6 GB), then this repository (~2 MB). Builds only redo the
# layers whose inputs changed, and committing one layer needs about 4x its size of free disk (buildah/docker write
# the diff, the blob and the layer), so smaller layers keep a build's peak disk down (see docs/deploying.md).
# pip keeps no cache (PIP_NO_CACHE_DIR); --no-deps because the lock is already the complete, resolved set.
COPY requirements/app.lock /opt/hymirec/app.lock
RUN set -eu; \
    groupadd --system --gid 10001 hymirec; \
    useradd --system --uid 10001 --gid 10001 --home-dir /home/hymirec --create-home --shell /usr/sbin/nologin hymirec; \
    python3 -m venv /opt/hymirec/venv; \
    if [ -n "$WHEELS" ]; then set -- --no-index --find-links "$WHEELS"; fi; \
    awk '/^[a-z0-9]/ { keep = /^(nvidia|cuda)-/ } keep' /opt/hymirec/app.lock > /tmp/part.lock; \
    PIP_NO_CACHE_DIR=1 pip install --quiet --disable-pip-version-check --no-deps --require-hashes "$@" -r /tmp/part.lock; \
    rm -f /tmp/part.lock
RUN set -eu; \
    if [ -n "$WHEELS" ]; then set -- --no-index --find-links "$WHEELS"; fi; \
    awk '/^[a-z0-9]/ { keep = /^torch==/ } keep' /opt/hymirec/app.lock > /tmp/part.lock; \
    PIP_NO_CACHE_DIR=1 pip install --quiet --disable-pip-version-check --no-deps --require-hashes "$@" -r /tmp/part.lock; \
    rm -f /tmp/part.lock
RUN set -eu; \
    if [ -n "$WHEELS" ]; then set -- --no-index --find-links "$WHEELS"; fi; \
    PIP_NO_CACHE_DIR=1 pip install --quiet --disable-pip-version-check --no-deps --require-hashes "$@" \
        -r /opt/hymirec/app.lock

# This repository, built with the locked setuptools (hence --no-build-isolation); the sources go once installed.
COPY pyproject.toml README.md /tmp/hymirec-src/
COPY core /tmp/hymirec-src/core
COPY features /tmp/hymirec-src/features
COPY training /tmp/hymirec-src/training
COPY serving /tmp/hymirec-src/serving
COPY orchestration /tmp/hymirec-src/orchestration
COPY bench /tmp/hymirec-src/bench
COPY devservices /tmp/hymirec-src/devservices
COPY hymirec /tmp/hymirec-src/hymirec
COPY dags /opt/hymirec/dags
RUN set -eu; \
    PIP_NO_CACHE_DIR=1 pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
        /tmp/hymirec-src; \
    rm -rf /tmp/hymirec-src; \
    hymirec --help >/dev/null

USER 10001:10001
WORKDIR /home/hymirec
EXPOSE 8080
CMD ["hymirec", "serve"]
