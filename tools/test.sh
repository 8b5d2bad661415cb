#!/usr/bin/env bash
# The one test command (README "Development"): creates the virtualenv, installs exsf with
# its test extras, makes a real Apache Kafka broker available, runs ruff, mypy and pytest,
# and stops what it started.
#
# Kafka, in this order: KAFKA_BOOTSTRAP_SERVERS if set; else a Docker engine for
# testcontainers (the pytest fixture starts it); else a local KRaft broker from the Apache
# Kafka jars on Maven Central (tools/kafka-broker.sh). Kafka tests are never skipped: if no
# broker can be had, this command fails and says why.
#
# Extra arguments go to pytest (e.g. tools/test.sh -k bus -x).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${EXSF_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

step() { printf '\n==> %s\n' "$*"; }

step "virtualenv $venv"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e ".[test]"

run_dir="$(mktemp -d "${TMPDIR:-/tmp}/exsf-test.XXXXXX")"
started_broker=""
cleanup() {
  local rc=$?
  if [ -n "$started_broker" ]; then
    if [ $rc -ne 0 ]; then
      echo "--- last broker log lines ($run_dir/logs/server.log) ---"
      tail -n 30 "$run_dir/logs/server.log" 2>/dev/null || true
    fi
    "$root/tools/kafka-broker.sh" stop "$run_dir" || true
  fi
  [ $rc -eq 0 ] && rm -rf "$run_dir"
  [ $rc -ne 0 ] && echo "test run failed; artefacts kept in $run_dir"
  exit $rc
}
trap cleanup EXIT

step "kafka"
if [ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
  echo "using existing cluster at $KAFKA_BOOTSTRAP_SERVERS"
elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  echo "a Docker engine answers: testcontainers will start Kafka"
else
  echo "no KAFKA_BOOTSTRAP_SERVERS and no Docker engine: starting a local KRaft broker"
  KAFKA_BOOTSTRAP_SERVERS="$("$root/tools/kafka-broker.sh" start "$run_dir")"
  started_broker=1
  export KAFKA_BOOTSTRAP_SERVERS
  echo "broker at $KAFKA_BOOTSTRAP_SERVERS (logs in $run_dir/logs)"
fi

# --- kustomize + kubeconform for tests/deploy (tools/k8s-tools.sh; pinned versions) ---
step "k8s tools"
EXSF_K8S_BIN="$("$root/tools/k8s-tools.sh")"
export EXSF_K8S_BIN
echo "kustomize, kubeconform in $EXSF_K8S_BIN"
# --- end k8s tools ---

step "ruff"
"$venv/bin/ruff" check services tests bench

step "mypy"
"$venv/bin/mypy"

step "pytest"
"$venv/bin/pytest" -q -p no:cacheprovider "$@"
