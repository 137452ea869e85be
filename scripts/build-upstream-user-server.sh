#!/usr/bin/env bash
# Builds the upstream Go user-server (stolostron/cluster-proxy-addon, `cluster-proxy user-server`) for
# the benchmark, into .cache/upstream-user-server/<commit>/. Not needed by `npm test`.
# The source comes from a local snapshot of the repository (a git dir given as $1 or UPSTREAM_GIT_DIR),
# pinned to UPSTREAM_COMMIT. The repository vendors its dependencies, so the build needs no network.
# Fetched code is only extracted into the ignored .cache folder, never committed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
commit="${UPSTREAM_COMMIT:-03253860}"
gitdir="${1:-${UPSTREAM_GIT_DIR:-}}"
out="$root/.cache/upstream-user-server/$commit"
bin="$out/cluster-proxy"
if [[ -x "$bin" ]]; then echo "$bin"; exit 0; fi
if [[ -z "$gitdir" || ! -d "$gitdir" ]]; then
  echo "no snapshot of stolostron/cluster-proxy-addon at '$gitdir': clone it and pass its git dir as the first argument or UPSTREAM_GIT_DIR" >&2
  exit 1
fi
mkdir -p "$out/src"
# Only what the build needs: the snapshot may lack large unrelated blobs (ANP tarballs).
git --git-dir="$gitdir" archive "$commit" go.mod go.sum cmd pkg vendor | tar -x -C "$out/src"
(cd "$out/src" && CGO_ENABLED=0 GOFLAGS=-mod=vendor go build -o "$bin" ./cmd/cluster-proxy)
echo "$bin"
