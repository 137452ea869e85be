#!/usr/bin/env bash
# Builds, once per machine, the Go programs the tests run: the real ANP binaries, the Kubernetes
# programs of the end-to-end tests and small helpers.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/build-anp.sh"
bash "$root/scripts/build-kube.sh"
for tool in blackhole goserviceproxy; do
  bin="$root/.cache/tools/$tool"
  if [[ ! -x "$bin" || "$root/test/go/$tool/main.go" -nt "$bin" ]]; then
    (cd "$root/test/go/$tool" && CGO_ENABLED=0 go build -o "$bin" .)
    echo "built $bin"
  fi
done
bash "$root/scripts/fetch-schemas.sh"
