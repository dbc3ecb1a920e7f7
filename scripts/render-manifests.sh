#!/usr/bin/env bash
# Renders deploy/kubernetes/capsule.yaml, the plain manifests, from the
# Helm chart deploy/helm/capsule with its default values (release
# "capsule" in namespace "cnvrg"), with the pinned helm that
# scripts/install-helm.sh builds. e2e/helm_test.go renders the same way
# and fails when the committed file differs.
#
#   scripts/render-manifests.sh [OUT]   (default deploy/kubernetes/capsule.yaml)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/deploy/kubernetes/capsule.yaml}"
helm="${HELM:-$root/.tools/bin/helm}"
if [[ ! -x "$helm" ]]; then
	echo "render-manifests: no $helm: run scripts/install-helm.sh" >&2
	exit 1
fi

{
	echo "# capsule's plain Kubernetes manifests, rendered from deploy/helm/capsule"
	echo "# with its default values by scripts/render-manifests.sh: do not edit;"
	echo "# change the chart and render again. Namespace \"cnvrg\" (the platform's);"
	echo "# the scanner serves the CnvrgApps and Secrets of that namespace only."
	echo "#   kubectl apply -f deploy/kubernetes/capsule.yaml"
	"$helm" template capsule "$root/deploy/helm/capsule" --namespace cnvrg
} >"$out.tmp"
mv -f "$out.tmp" "$out"
