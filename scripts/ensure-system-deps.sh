#!/usr/bin/env bash
# Makes sure the system tools finpipe's local stack needs are present: Python 3.11, Java 17+
# and Maven (Kafka comes from Maven Central jars), PostgreSQL 15 server binaries.
# On this machine kind they come with the image; elsewhere (as root) they are installed from
# Debian's packages.
set -euo pipefail

missing=()
command -v python3.11 >/dev/null || command -v python3 >/dev/null || missing+=(python3 python3-venv)
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql-15)
fi
id postgres >/dev/null 2>&1 || [ "$(id -u)" != 0 ] || missing+=(postgresql-15)
# Debian's chromium (/usr/bin/chromium) for the browser test of the Dagster UI
# (tests/test_browser; Playwright's own browser download does not work here). Large, so only
# when missing; without root it is only reported: the stack itself does not need it.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    missing+=(chromium)
  else
    echo "note: /usr/bin/chromium is missing; the browser test needs it (apt-get install chromium)" >&2
  fi
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "finpipe needs: ${missing[*]} (install them with your package manager)" >&2
  exit 1
fi
echo "installing system packages: ${missing[*]}"
apt-get update -qq
apt-get install -y -qq "${missing[@]}"
