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
# h2spec (test/integration/h2spec.test.ts): v2.2.1+incompatible, the newest the Go module proxy serves, has
# no go.mod of its own; test/go/h2spec pins it and its dependencies (go.sum committed).
h2spec="$root/.cache/tools/h2spec"
if [[ ! -x "$h2spec" || "$root/test/go/h2spec/go.mod" -nt "$h2spec" ]]; then
  (cd "$root/test/go/h2spec" && CGO_ENABLED=0 go build -mod=readonly -trimpath -o "$h2spec" github.com/summerwind/h2spec/cmd/h2spec)
  echo "built $h2spec"
fi
bash "$root/scripts/fetch-schemas.sh"
# promtool for `promtool test rules` on openshift/prometheusrule.yaml (test/deploy/prometheus-rules.test.ts),
# built from the Go module proxy (a few minutes, once); the stamp names the version built.
promtool_version="${PROMTOOL_VERSION:-v0.316.0}"
promtool="$root/.cache/tools/promtool"
if [[ ! -x "$promtool" || "$(cat "$promtool.version" 2>/dev/null)" != "$promtool_version" ]]; then
  echo "building promtool $promtool_version (first run on this machine only)..."
  (cd "$root/.cache/tools" && GOBIN="$root/.cache/tools" CGO_ENABLED=0 go install "github.com/prometheus/prometheus/cmd/promtool@$promtool_version")
  echo "$promtool_version" > "$promtool.version"
  echo "built $promtool"
fi
# Debian's headless Chromium for the operator page's browser test (test/integration/operator-view.test.ts).
if [[ ! -x /usr/bin/chromium ]]; then
  echo "installing chromium from Debian (first run on this machine only)..."
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
fi
