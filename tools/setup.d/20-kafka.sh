#!/usr/bin/env bash
# Apache Kafka broker jars (KRaft) from Maven Central into tools/kafka/target/lib (git-ignored).
# Idempotent: resolves only when the jars of the pom's version are missing; a stamp of the pom makes it instant
# the second time.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
K="$ROOT/tools/kafka"
STAMP="$K/target/.stamp-jars"
WANT="$(sha256sum "$K/pom.xml" | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ] && ls "$K"/target/lib/kafka_2.13-*.jar >/dev/null 2>&1; then
    echo "[setup] kafka jars present"
    exit 0
fi
command -v java >/dev/null || { echo "[setup] java not found: apt-get install -y openjdk-17-jre-headless" >&2; exit 1; }
if ! command -v mvn >/dev/null; then
    echo "[setup] installing maven (apt-get)"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends maven >/dev/null
fi
echo "[setup] resolving kafka broker jars (mvn dependency:copy-dependencies)"
rm -rf "$K/target/lib"
mvn -q -B -f "$K/pom.xml" dependency:copy-dependencies
echo "$WANT" > "$STAMP"
echo "[setup] kafka jars: $(ls "$K/target/lib" | wc -l) files in tools/kafka/target/lib"
