#!/usr/bin/env bash
# Builds the newer OCM user-server (open-cluster-management.io/cluster-proxy, binary cluster-proxy,
# subcommand `user-server`) for the side-by-side benchmark, into .cache/ocm-user-server/<version>/.
# Not needed by `npm test`. Prints the binary path; later runs reuse it.
# v0.10.0 is the newest version the Go module proxy serves here (v0.8, v0.9, v0.10.1+, v1.x: 403;
# v0.7.0 has no user-server yet).
set -euo pipefail
version="${OCM_USER_SERVER_VERSION:-v0.10.0}"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/.cache/ocm-user-server/$version"
bin="$out/cluster-proxy"
if [[ -x "$bin" ]]; then echo "$bin"; exit 0; fi
command -v go >/dev/null || { echo "go is required to build the OCM user-server $version" >&2; exit 1; }
mod="$out/src"
mkdir -p "$mod"
# `go install pkg@v` is not used so the build goes the same way as build-anp.sh; the module has no
# replace directives, so a consumer module requiring it resolves the same dependency versions.
# go 1.25.0 is what the module's own go.mod asks for (the installed 1.26 satisfies it).
cat >"$mod/go.mod" <<GOMOD
module local.test/ocm-user-server-bin

go 1.25.0

require open-cluster-management.io/cluster-proxy $version
GOMOD
# A blank import under a build tag makes `go mod tidy` record the main package's dependencies.
cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import _ "open-cluster-management.io/cluster-proxy/cmd/cluster-proxy"
GO
# Seed go.sum from the module's own (checksum-verified) go.sum: the checksum database answers 404 for
# sigs.k8s.io/apiserver-network-proxy v0.33.0, so tidy cannot verify that module by itself.
cd "$mod"
cp "$(go mod download -json "open-cluster-management.io/cluster-proxy@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')/go.sum" go.sum
chmod u+w go.sum
export GOFLAGS="-mod=mod -buildvcs=false"
echo "ocm-user-server $version: resolving modules (first run on this machine only)..." >&2
go mod tidy >&2
echo "ocm-user-server $version: building..." >&2
# The version flag is what `cluster-proxy --version` prints; there is no commit to stamp.
CGO_ENABLED=0 go build -trimpath \
  -ldflags "-s -w -X open-cluster-management.io/cluster-proxy/pkg/version.versionFromGit=$version" \
  -o "$bin.tmp" open-cluster-management.io/cluster-proxy/cmd/cluster-proxy
mv "$bin.tmp" "$bin"
echo "$bin"
