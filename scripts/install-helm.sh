#!/usr/bin/env bash
# Builds the pinned helm binary that renders and tests capsule's chart
# (deploy/helm/capsule) from the Go module proxy into <repo>/.tools/bin/helm.
#
# No helm release archive can be downloaded here, so helm is built from
# source in a throwaway wrapper module in a temporary directory (as
# scripts/envtest-assets.sh builds kube-apiserver): helm's own go.mod
# decides every dependency, none of them enters capsule's go.mod.
#
# Idempotent: a binary whose build info (go version -m) records the pinned
# helm.sh/helm/v4 version is left alone, so a warm run costs a second. A
# cold build (module download and compile) takes about 4 minutes on 2 cores.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v4.3.2}"
HELM_MODULE="helm.sh/helm/v4"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/.tools/bin"
mkdir -p "$bin"

# The Go of capsule's go.mod toolchain line: pinned, and new enough for
# helm's go.mod (go 1.26.0 at v4.3.2).
export GOTOOLCHAIN="$(awk '$1 == "toolchain" { print $2 }' "$root/go.mod")"
export CGO_ENABLED=0
export GOFLAGS="-mod=mod -buildvcs=false"

have=""
if [[ -x "$bin/helm" ]]; then
	have="$(go version -m "$bin/helm" 2>/dev/null | awk -v m="$HELM_MODULE" '($1 == "dep" || $1 == "mod") && $2 == m { print $3; exit }')"
fi
if [[ "$have" == "$HELM_VERSION" ]]; then
	echo "install-helm: helm $HELM_VERSION already in $bin"
	exit 0
fi
echo "install-helm: building helm $HELM_VERSION (${have:-absent} before) into $bin"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(
	cd "$tmp"
	go mod init capsule.local/helm >/dev/null 2>&1
	go get "$HELM_MODULE/cmd/helm@$HELM_VERSION"
	# The version `helm version` reports; without it helm says only "v4.3".
	go build -trimpath \
		-ldflags "-s -w -X $HELM_MODULE/internal/version.version=$HELM_VERSION -X $HELM_MODULE/internal/version.gitTreeState=clean" \
		-o "$tmp/helm" "$HELM_MODULE/cmd/helm"
	mv -f "$tmp/helm" "$bin/helm"
)
echo "install-helm: built $bin/helm ($("$bin/helm" version --short 2>/dev/null || echo '?'))"
