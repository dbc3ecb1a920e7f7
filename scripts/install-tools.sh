#!/usr/bin/env bash
# Installs the pinned tools that capsule's tests run (S3 server, ...) into
# <repo>/.tools/bin. Idempotent: a tool whose binary already reports the
# pinned module version is left alone. Needs only the Go toolchain.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/.tools/bin"
mkdir -p "$bin"

# install NAME MODULE_PATH PACKAGE VERSION [INSTALLED_NAME]
# INSTALLED_NAME is the file go install produces (the last element of
# PACKAGE) when it differs from NAME; the binary is renamed to NAME.
install() {
	local name="$1" module="$2" pkg="$3" version="$4" built="${5:-$1}"
	local have=""
	if [[ -x "$bin/$name" ]]; then
		have="$(go version -m "$bin/$name" 2>/dev/null | awk -v m="$module" '$1 == "mod" && $2 == m { print $3 }')"
	fi
	if [[ "$have" == "$version" ]]; then
		echo "install-tools: $name $version already in $bin"
		return
	fi
	echo "install-tools: installing $name $version (${have:-absent} before) into $bin"
	GOBIN="$bin" go install "$pkg@$version"
	if [[ "$built" != "$name" ]]; then
		mv -f "$bin/$built" "$bin/$name"
	fi
}

install versitygw github.com/versity/versitygw github.com/versity/versitygw/cmd/versitygw v1.8.0
install goaws github.com/Admiral-Piett/goaws github.com/Admiral-Piett/goaws/app/cmd v0.5.4 cmd
