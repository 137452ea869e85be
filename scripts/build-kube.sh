#!/usr/bin/env bash
# Builds the Kubernetes programs the end-to-end tests run into .cache/kube/<version>/, from the Go
# module proxy and test/go/kube (one module, go.sum committed): the real kube-apiserver
# (k8s.io/kubernetes/cmd/kube-apiserver), etcd (go.etcd.io/etcd/server/v3/embed), kubectl
# (k8s.io/kubectl/pkg/cmd), the test kubelet and the client-go example. A stamp of the sources' hash
# makes later runs a no-op; a source change rebuilds (Go's build cache keeps that quick).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
src="$root/test/go/kube"
version="$(sed -n 's/^\tk8s.io\/kubernetes \(v[0-9.]*\).*/\1/p' "$src/go.mod")"
[[ -n "$version" ]] || { echo "kube: cannot read the k8s.io/kubernetes version from $src/go.mod" >&2; exit 1; }
out="$root/.cache/kube/$version"
bins=(kube-apiserver etcd kubectl testkubelet clientgo)
stamp="$(cd "$src" && find . -name '*.go' -o -name go.mod -o -name go.sum | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)"
cached=1
for b in "${bins[@]}"; do [[ -x "$out/$b" ]] || cached=0; done
if [[ $cached == 1 && "$(cat "$out/.stamp" 2>/dev/null)" == "$stamp" ]]; then
  echo "kube $version: cached in $out"
  exit 0
fi
command -v go >/dev/null || { echo "go is required to build kube $version" >&2; exit 1; }
echo "kube $version: building ${bins[*]} into $out (first time on a machine: 5 min on 2 idle cores, up to 15 when busy)..."
mkdir -p "$out"
started=$SECONDS
# Progress for a long silent compile: a line every 30 s until the build ends.
( while sleep 30 >/dev/null 2>&1; do echo "kube $version: still building ($((SECONDS - started)) s)"; done ) &
ticker=$!
trap 'kill $ticker 2>/dev/null || true' EXIT
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  minor="${version#v1.}"
  ldflags+=" -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=${minor%%.*} -X $p.gitTreeState=clean"
done
tmp="$out/.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
(cd "$src" && CGO_ENABLED=0 go build -mod=readonly -buildvcs=false -trimpath -ldflags "$ldflags" -o "$tmp/" \
  ./etcd ./kubectl ./testkubelet ./clientgo k8s.io/kubernetes/cmd/kube-apiserver)
for b in "${bins[@]}"; do mv "$tmp/$b" "$out/$b"; done
rmdir "$tmp"
echo "$stamp" >"$out/.stamp"
echo "kube $version: built in $((SECONDS - started)) s"
