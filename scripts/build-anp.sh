#!/usr/bin/env bash
# Builds the real apiserver-network-proxy proxy-server and proxy-agent from the Go module proxy
# into .cache/anp/<version>/, once. Later runs reuse the binaries.
set -euo pipefail
version="${ANP_VERSION:-v0.34.0}"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/.cache/anp/$version"
if [[ -x "$out/proxy-server" && -x "$out/proxy-agent" ]]; then
  echo "anp $version: cached in $out"
  exit 0
fi
command -v go >/dev/null || { echo "go is required to build ANP $version" >&2; exit 1; }
mod="$out/src"
mkdir -p "$mod"
# Go versions and replace rules: ../shared/reference/anp.md section 4.2. `go install pkg@v` refuses
# modules with replace directives, so a consumer module pins both ANP modules to one version.
cat >"$mod/go.mod" <<GOMOD
module local.test/anp-bin

go 1.24.7

require (
	sigs.k8s.io/apiserver-network-proxy $version
	sigs.k8s.io/apiserver-network-proxy/konnectivity-client $version
)
GOMOD
cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "sigs.k8s.io/apiserver-network-proxy/cmd/agent"
	_ "sigs.k8s.io/apiserver-network-proxy/cmd/server"
)
GO
echo "anp $version: resolving modules (first run on this machine only)..."
cd "$mod"
export GOFLAGS=-mod=mod
go mod tidy
echo "anp $version: building proxy-server and proxy-agent..."
CGO_ENABLED=0 go build -o "$out/proxy-server.tmp" sigs.k8s.io/apiserver-network-proxy/cmd/server
CGO_ENABLED=0 go build -o "$out/proxy-agent.tmp" sigs.k8s.io/apiserver-network-proxy/cmd/agent
mv "$out/proxy-server.tmp" "$out/proxy-server"
mv "$out/proxy-agent.tmp" "$out/proxy-agent"
echo "anp $version: built into $out"
