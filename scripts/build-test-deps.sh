#!/usr/bin/env bash
# Builds, once per machine, the Go programs the tests run: the real ANP binaries, the Kubernetes
# programs of the end-to-end tests and small helpers.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# ANP versions the tests can run against (ANP_VERSION, test/harness/anp.ts). v0.34.0 comes first:
# it is the default, so an interrupted or failed build of another version still leaves it usable.
# v0.36.0 is the newest release; v0.30.3 the oldest the Go module proxy serves (HTTP-CONNECT era A).
# An ANP_VERSION set in the environment is built as well, as before.
anp_versions=(v0.34.0 v0.36.0 v0.30.3)
if [[ -n "${ANP_VERSION:-}" && " ${anp_versions[*]} " != *" $ANP_VERSION "* ]]; then
  anp_versions+=("$ANP_VERSION")
fi
for v in "${anp_versions[@]}"; do
  ANP_VERSION="$v" bash "$root/scripts/build-anp.sh"
done
bash "$root/scripts/build-kube.sh"
for tool in blackhole goserviceproxy; do
  bin="$root/.cache/tools/$tool"
  if [[ ! -x "$bin" || "$root/test/go/$tool/main.go" -nt "$bin" ]]; then
    (cd "$root/test/go/$tool" && CGO_ENABLED=0 go build -o "$bin" .)
    echo "built $bin"
  fi
done
bash "$root/scripts/fetch-schemas.sh"
