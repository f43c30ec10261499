#!/usr/bin/env bash
# Install what the test suite runs against, if it is missing: PostgreSQL and Prometheus (with
# promtool) from Debian's packages, Java and Maven, and the Apache Kafka jars from Maven Central.
# The servers themselves are started by the pytest session fixtures (tests/conftest.py).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

need=()
ls -d /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root" >&2; exit 1
  fi
  echo "==> apt-get install ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${need[@]}" >&2
fi
# Debian's postgresql package starts a cluster on 5432 where systemd exists; the tests use their own.

echo "==> Apache Kafka jars (Maven Central; cached after the first run)" >&2
"$here/../kafka/kafka.sh" resolve
