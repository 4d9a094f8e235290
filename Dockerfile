# finpipe: one image for the Dagster code location (and the runs it launches) and both workers.
#
#   docker build -t finpipe:0.1.0 .
#   docker run --rm finpipe:0.1.0 python -m workers.agent          # or workers.processor
#
# One image, not one per role: the three roles share one dependency set (pyproject.toml pinned
# by constraints.txt), so one build, one scan and one tag move together. The workers never
# import Dagster, so its packages cost them disk (pulled once per node), not start-up time.
#
# The dependency set has one source of truth: pyproject.toml's [project].dependencies, with
# every version (direct and transitive) from constraints.txt. Nothing is pinned here; the build
# fails unless the virtualenv holds exactly finpipe's runtime closure at the pinned versions
# (scripts/check_image_deps.py: no benchmark or test extra, no pip or setuptools). The build
# backend is pinned too (pyproject [build-system], constraints.txt), so the same setuptools
# builds finpipe every time, also from an offline wheelhouse.
#
# numba's kernels are compiled during the build (scripts/compile_numba_cache.py) into
# /opt/numba-cache, for a generic x86-64 CPU so any node can load them; the worker chart's
# init container copies them to the writable /tmp/numba that NUMBA_CACHE_DIR names (numba
# refuses a cache directory it cannot write, and the root filesystem is read-only).
#
# Base pinned to an exact Python patch release on Debian 12. For byte-for-byte rebuilds pin the
# digest too: PYTHON_BASE=python:3.11.14-slim-bookworm@sha256:<digest>, the digest from
# `docker buildx imagetools inspect python:3.11.14-slim-bookworm`.
ARG PYTHON_BASE=python:3.11.14-slim-bookworm

# ---- build: a virtualenv with the dependencies and finpipe ----------------------------------
FROM ${PYTHON_BASE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Also constrain the isolated environments pip builds source distributions in.
ENV PIP_CONSTRAINT=/src/constraints.txt

# Dependencies first (a layer cached until pyproject.toml or constraints.txt change): exactly
# pyproject's dependency list, resolved under constraints.txt. Wheels only: every pinned
# package ships one for CPython 3.11 on Linux, and the slim base has no compiler.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install --only-binary=:all: -c constraints.txt -r /tmp/requirements.txt

# Then finpipe itself, without touching the dependency set.
COPY scripts/check_image_deps.py scripts/compile_numba_cache.py ./scripts/
COPY README.md ./
COPY finpipe_core ./finpipe_core
COPY finpipe_manager ./finpipe_manager
COPY workers ./workers
COPY finpipe ./finpipe
COPY finpipe_dagster ./finpipe_dagster
RUN pip install --no-deps -c constraints.txt . \
 && pip check \
 && pip uninstall --yes setuptools pip \
 && python scripts/check_image_deps.py constraints.txt \
 && python -m compileall -q /opt/venv/lib

# numba's machine code for every kernel, compiled once here instead of in every new pod.
ENV NUMBA_CPU_NAME=generic
RUN NUMBA_CACHE_DIR=/opt/numba-cache python scripts/compile_numba_cache.py

# ---- runtime: the virtualenv on the same slim base, as a non-root user ----------------------
FROM ${PYTHON_BASE} AS runtime
RUN groupadd --system --gid 10001 finpipe \
 && useradd --system --uid 10001 --gid finpipe --home-dir /home/finpipe --create-home \
      --shell /usr/sbin/nologin finpipe \
 && mkdir -p /opt/dagster/dagster_home \
 && chown finpipe:finpipe /opt/dagster/dagster_home
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/numba-cache /opt/numba-cache
# Caches go to /tmp (the only writable path when the root filesystem is read-only in Kubernetes):
# yfinance's timezone cache (XDG_CACHE_HOME), numba's kernels (seeded from /opt/numba-cache by
# the worker chart's init container; same CPU target as the build), matplotlib's config.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/finpipe \
    XDG_CACHE_HOME=/tmp/.cache \
    NUMBA_CACHE_DIR=/tmp/numba \
    NUMBA_CPU_NAME=generic \
    MPLCONFIGDIR=/tmp/matplotlib \
    DAGSTER_HOME=/opt/dagster/dagster_home
WORKDIR /home/finpipe
USER 10001:10001
# gRPC code server; the workers' health and Prometheus ports (finpipe_core.settings).
EXPOSE 3030 8080 9100
# Default role: the Dagster code location. The Dagster chart and the workers chart set their own.
CMD ["dagster", "api", "grpc", "-m", "finpipe_dagster.definitions", "-h", "0.0.0.0", "-p", "3030"]
