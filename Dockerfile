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
# fails if what got installed differs from constraints.txt.
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
COPY README.md ./
COPY workers ./workers
COPY finpipe ./finpipe
COPY finpipe_dagster ./finpipe_dagster
RUN pip install --no-deps -c constraints.txt . \
 && pip check \
 && python -c "import importlib.metadata as md, re; \
norm = lambda n: re.sub(r'[-_.]+', '-', n).lower(); \
pins = dict((norm(a), b.strip()) for a, b in (l.split('==', 1) for l in open('constraints.txt') if '==' in l)); \
bad = [(d.metadata['Name'], d.version, pins[norm(d.metadata['Name'])]) for d in md.distributions() \
       if norm(d.metadata['Name']) in pins and pins[norm(d.metadata['Name'])] != d.version]; \
assert not bad, f'installed versions differ from constraints.txt: {bad}'" \
 && python -m compileall -q /opt/venv/lib

# ---- runtime: the virtualenv on the same slim base, as a non-root user ----------------------
FROM ${PYTHON_BASE} AS runtime
RUN groupadd --system --gid 10001 finpipe \
 && useradd --system --uid 10001 --gid finpipe --home-dir /home/finpipe --create-home \
      --shell /usr/sbin/nologin finpipe \
 && mkdir -p /opt/dagster/dagster_home \
 && chown finpipe:finpipe /opt/dagster/dagster_home
COPY --from=build /opt/venv /opt/venv
# Caches go to /tmp (the only writable path when the root filesystem is read-only in Kubernetes):
# yfinance's timezone cache (XDG_CACHE_HOME), numba's compiled kernels, matplotlib's config.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/finpipe \
    XDG_CACHE_HOME=/tmp/.cache \
    NUMBA_CACHE_DIR=/tmp/numba \
    MPLCONFIGDIR=/tmp/matplotlib \
    DAGSTER_HOME=/opt/dagster/dagster_home
WORKDIR /home/finpipe
USER 10001:10001
# gRPC code server; the workers' health and Prometheus ports (workers.settings).
EXPOSE 3030 8080 9100
# Default role: the Dagster code location. The Dagster chart and the workers chart set their own.
CMD ["dagster", "api", "grpc", "-m", "finpipe_dagster.definitions", "-h", "0.0.0.0", "-p", "3030"]
