#!/usr/bin/env bash
# Builds the real apiserver-network-proxy proxy-server and proxy-agent from the Go module proxy
# into .cache/anp/<version>/, once. Later runs reuse the binaries.
# Known to build: v0.34.0 (the default), v0.36.0 and v0.30.3 (the oldest v0.30.x the module proxy
# serves; v0.1.6 and v0.30.0-v0.30.2 are not served there).
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
cd "$mod"
# A failed earlier run may have left a go.mod that does not resolve; start the module afresh.
rm -f go.mod go.sum
export GOFLAGS=-mod=mod
# The consumer module below depends on two facts of the ANP tag's own go.mod, so fetch that first
# (this also says plainly when the proxy does not serve the version).
echo "anp $version: resolving modules (first run on this machine only)..."
if ! info="$(go mod download -json "sigs.k8s.io/apiserver-network-proxy@$version")"; then
  echo "$info" >&2
  echo "anp $version: could not fetch it from the Go module proxy ($(go env GOPROXY)); is the version served?" >&2
  exit 1
fi
anp_gomod="$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' <<<"$info")"
# 1. The go line: the consumer's must be >= the tag's (v0.35+ say 1.26.2, v0.34.0 1.24.7, v0.30.x
#    1.21). Taking the tag's own line, not one line for all, also keeps the GODEBUG defaults (which the
#    main module's go line picks) the ones upstream built that tag with.
go_line="$(awk '$1 == "go" { print $2; exit }' "$anp_gomod")"
[[ -n "$go_line" ]] || { echo "anp $version: no go line in $anp_gomod" >&2; exit 1; }
# 2. Replace rules: ../shared/reference/anp.md section 4.2. `go install pkg@v` refuses modules with
#    replace directives, so a consumer module pins both ANP modules to one version. ANP's own replace
#    (konnectivity-client => ./konnectivity-client) is ignored in a dependency, and up to v0.30.x the
#    tag requires konnectivity-client v0.0.0, which no proxy serves: there the consumer replaces every
#    konnectivity-client version with the one of the same tag.
replace=""
if grep -Eq '^[[:space:]]*(require[[:space:]]+)?sigs\.k8s\.io/apiserver-network-proxy/konnectivity-client v0\.0\.0([[:space:]]|$)' "$anp_gomod"; then
  replace="replace sigs.k8s.io/apiserver-network-proxy/konnectivity-client => sigs.k8s.io/apiserver-network-proxy/konnectivity-client $version"
fi
cat >"$mod/go.mod" <<GOMOD
module local.test/anp-bin

go $go_line

require (
	sigs.k8s.io/apiserver-network-proxy $version
	sigs.k8s.io/apiserver-network-proxy/konnectivity-client $version
)
$replace
GOMOD
cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "sigs.k8s.io/apiserver-network-proxy/cmd/agent"
	_ "sigs.k8s.io/apiserver-network-proxy/cmd/server"
)
GO
go mod tidy
echo "anp $version: building proxy-server and proxy-agent..."
CGO_ENABLED=0 go build -o "$out/proxy-server.tmp" sigs.k8s.io/apiserver-network-proxy/cmd/server
CGO_ENABLED=0 go build -o "$out/proxy-agent.tmp" sigs.k8s.io/apiserver-network-proxy/cmd/agent
mv "$out/proxy-server.tmp" "$out/proxy-server"
mv "$out/proxy-agent.tmp" "$out/proxy-agent"
echo "anp $version: built into $out"
