#!/usr/bin/env bash
# Extracts, once per machine, the API schemas that test/deploy validates openshift/*.yaml against,
# into .cache/schemas/ (never committed). Both come from the Go module proxy as module sources:
#   k8s.io/kubernetes        api/openapi-spec/v3/*.json  (the apiserver's published OpenAPI v3)
#   github.com/openshift/api route/v1/.../routes.crd.yaml (the Route CRD with its openAPIV3Schema)
#   github.com/prometheus-operator/prometheus-operator example/prometheus-operator-crd/ (the ServiceMonitor
#                            and PrometheusRule CRDs; v0.85.0 is the newest version of that module served)
# KUBE_VERSION matches the kube-apiserver the e2e tests build, so one download serves both.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
kube="${KUBE_VERSION:-v1.37.2}"
openshift="${OPENSHIFT_API_VERSION:-v0.0.0-20260728120005-8ba0b25b0f29}"
promop="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
out="$root/.cache/schemas"
kube_out="$out/kubernetes-$kube"
openshift_out="$out/openshift-api-$openshift"
promop_out="$out/prometheus-operator-$promop"
promop_files=(monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_prometheusrules.yaml)
kube_files=(api__v1_openapi.json apis__apps__v1_openapi.json apis__policy__v1_openapi.json
  apis__autoscaling__v2_openapi.json apis__networking.k8s.io__v1_openapi.json)

cached=1
for f in "${kube_files[@]}"; do [[ -s "$kube_out/$f" ]] || cached=0; done
[[ -s "$openshift_out/routes.crd.yaml" ]] || cached=0
for f in "${promop_files[@]}"; do [[ -s "$promop_out/$f" ]] || cached=0; done
if [[ $cached == 1 ]]; then
  echo "schemas: cached in $out"
  exit 0
fi
command -v go >/dev/null || { echo "go is required to fetch the API schemas" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# `go mod download -json` prints the module's extracted folder as "Dir"; run outside any module.
module_dir() {
  local json dir
  echo "schemas: downloading $1 (first run on this machine only)..." >&2
  json="$(cd "$work" && go mod download -json "$1")" || { echo "$json" >&2; return 1; }
  dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")"
  [[ -d "$dir" ]] || { echo "schemas: no module folder for $1: $json" >&2; return 1; }
  echo "$dir"
}

kube_dir="$(module_dir "k8s.io/kubernetes@$kube")"
mkdir -p "$kube_out.tmp"
for f in "${kube_files[@]}"; do cp "$kube_dir/api/openapi-spec/v3/$f" "$kube_out.tmp/$f"; done
chmod -R u+w "$kube_out.tmp"
rm -rf "$kube_out" && mv "$kube_out.tmp" "$kube_out"

openshift_dir="$(module_dir "github.com/openshift/api@$openshift")"
mkdir -p "$openshift_out.tmp"
cp "$openshift_dir/route/v1/zz_generated.crd-manifests/routes.crd.yaml" "$openshift_out.tmp/"
chmod -R u+w "$openshift_out.tmp"
rm -rf "$openshift_out" && mv "$openshift_out.tmp" "$openshift_out"

promop_dir="$(module_dir "github.com/prometheus-operator/prometheus-operator@$promop")"
mkdir -p "$promop_out.tmp"
for f in "${promop_files[@]}"; do cp "$promop_dir/example/prometheus-operator-crd/$f" "$promop_out.tmp/$f"; done
chmod -R u+w "$promop_out.tmp"
rm -rf "$promop_out" && mv "$promop_out.tmp" "$promop_out"
echo "schemas: extracted into $out"
