#!/usr/bin/env bash
# Builds the binaries that envtest (sigs.k8s.io/controller-runtime/pkg/envtest)
# runs -- etcd, kube-apiserver and kubectl -- from the Go module proxy into
# <repo>/.tools/envtest, the directory KUBEBUILDER_ASSETS points at.
#
# The usual envtest download (setup-envtest) does not work here, so each
# binary is built from source in a throwaway wrapper module in a temporary
# directory:
#   - etcd: requires go.etcd.io/etcd/server/v3 at ETCD_VERSION.
#   - kube-apiserver, kubectl: require k8s.io/kubernetes at KUBE_VERSION and
#     replace every k8s.io staging module that k8s.io/kubernetes' own go.mod
#     maps to ./staging/... with the published k8s.io/<module> v0.<minor>.<patch>
#     (k8s.io/kubernetes is not meant to be required as a module; without the
#     replaces its requirements on v0.0.0 cannot be resolved).
#
# Idempotent: a binary whose build info (go version -m) records the pinned
# version is left alone, so a warm run costs a second. A cold build takes
# about 5 minutes on 2 cores (most of it kube-apiserver).
#
# Keep the versions in step with go.mod: Kubernetes 1.35 <-> k8s.io/client-go
# v0.35 <-> sigs.k8s.io/controller-runtime v0.23.
set -euo pipefail

ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KUBE_VERSION="${KUBE_VERSION:-v1.35.4}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/.tools/envtest"
mkdir -p "$out"

export CGO_ENABLED=0
export GOTOOLCHAIN=local
export GOFLAGS="-mod=mod -buildvcs=false"

# has BINARY MODULE VERSION: BINARY exists and was built from MODULE@VERSION.
has() {
	local bin="$1" module="$2" version="$3" got=""
	if [[ -x "$out/$bin" ]]; then
		got="$(go version -m "$out/$bin" 2>/dev/null | awk -v m="$module" '($1 == "dep" || $1 == "mod") && $2 == m { print $3; exit }')"
	fi
	if [[ "$got" == "$version" ]]; then
		echo "envtest-assets: $bin $version already in $out"
		return 0
	fi
	echo "envtest-assets: building $bin $version (${got:-absent} before) into $out"
	return 1
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if ! has etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION"; then
	mkdir -p "$tmp/etcd"
	(
		cd "$tmp/etcd"
		go mod init capsule.local/envtest-etcd >/dev/null 2>&1
		go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
		go build -trimpath -o "$out/etcd" go.etcd.io/etcd/server/v3
	)
	echo "envtest-assets: built $out/etcd"
fi

need_kube=0
has kube-apiserver k8s.io/kubernetes "$KUBE_VERSION" || need_kube=1
has kubectl k8s.io/kubernetes "$KUBE_VERSION" || need_kube=1
if [[ "$need_kube" == 1 ]]; then
	mkdir -p "$tmp/kube"
	staging="v0.${KUBE_VERSION#v1.}"
	(
		cd "$tmp/kube"
		# k8s.io/kubernetes' go.mod names the staging modules it replaces.
		kmod="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
		if [[ -z "$kmod" || ! -f "$kmod" ]]; then
			echo "envtest-assets: cannot find the go.mod of k8s.io/kubernetes@$KUBE_VERSION" >&2
			exit 1
		fi
		mods="$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' "$kmod")"
		if [[ -z "$mods" ]]; then
			echo "envtest-assets: no staging replaces in $kmod" >&2
			exit 1
		fi
		{
			echo "module capsule.local/envtest-kube"
			echo
			echo "go 1.25.0"
			echo
			echo "require k8s.io/kubernetes $KUBE_VERSION"
			echo
			echo "replace ("
			for m in $mods; do
				echo "	$m => $m $staging"
			done
			echo ")"
		} >go.mod
		echo "envtest-assets: wrapper replaces $(echo "$mods" | wc -l) staging modules with $staging"
		go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION" "k8s.io/kubernetes/cmd/kubectl@$KUBE_VERSION"
		# The version the binaries report (--version, /version); without it
		# they would call themselves v0.0.0-master.
		major="${KUBE_VERSION#v}"; major="${major%%.*}"
		minor="${KUBE_VERSION#v*.}"; minor="${minor%%.*}"
		ldflags=""
		for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
			ldflags+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
		done
		go build -trimpath -ldflags "$ldflags" -o "$out/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
	)
	echo "envtest-assets: built $out/kube-apiserver and $out/kubectl"
fi

echo "envtest-assets: KUBEBUILDER_ASSETS=$out"
