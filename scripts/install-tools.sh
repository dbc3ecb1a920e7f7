#!/usr/bin/env bash
# Installs the pinned tools that capsule's tests run (S3 server, SQS
# server, age, the GCS and Azure Storage emulators, the FerretDB stand-in for
# MongoDB, govulncheck, helm) into <repo>/.tools/bin. Idempotent: a tool whose
# binary already reports the pinned version is left alone. Needs the Go
# toolchain, and Node.js with npm for Azurite.
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
# age and age-keygen, the standard command-line tools that open capsule's
# encrypted artifacts (docs/restore-without-capsule.md; its test runs them),
# built from the same pinned module capsule encrypts with.
install age filippo.io/age filippo.io/age/cmd/age v1.3.2
install age-keygen filippo.io/age filippo.io/age/cmd/age-keygen v1.3.2
# The Google Cloud Storage emulator that internal/gcstest runs (in memory).
install fake-gcs-server github.com/fsouza/fake-gcs-server github.com/fsouza/fake-gcs-server v1.56.1
# The MongoDB stand-in that engines/mongodb's tests run as a child process:
# internal/tools/ferretdb, a module of its own (FerretDB's SQL drivers stay
# out of capsule's go.mod) that wraps FerretDB's embeddable package; the
# binary records FerretDB's version as a dependency.
ferretdb_version="$(cd "$root/internal/tools/ferretdb" && go list -m -f '{{.Version}}' github.com/FerretDB/FerretDB)"
# The wrapper's own source changes too (its flags): rebuild when it does.
ferretdb_src="$(cat "$root"/internal/tools/ferretdb/{main.go,go.mod,go.sum} | sha256sum | cut -c1-16)"
have_ferretdb=""
if [[ -x "$bin/ferretdb" && "$(cat "$bin/ferretdb.src" 2>/dev/null)" == "$ferretdb_src" ]]; then
	have_ferretdb="$(go version -m "$bin/ferretdb" 2>/dev/null | awk '$1 == "dep" && $2 == "github.com/FerretDB/FerretDB" { print $3 }')"
fi
if [[ "$have_ferretdb" == "$ferretdb_version" ]]; then
	echo "install-tools: ferretdb $ferretdb_version already in $bin"
else
	echo "install-tools: building ferretdb $ferretdb_version (wrapper $ferretdb_src) into $bin"
	(cd "$root/internal/tools/ferretdb" && go build -o "$bin/ferretdb" .)
	echo "$ferretdb_src" >"$bin/ferretdb.src"
fi
# govulncheck type-checks capsule against the standard library of the go
# command that runs it, and a binary built by an older Go cannot parse a
# newer one's: one binary per Go version (scripts/govulncheck.sh picks it).
install "govulncheck-$(go env GOVERSION)" golang.org/x/vuln golang.org/x/vuln/cmd/govulncheck v1.9.0 govulncheck
# helm, which renders and tests the chart (deploy/helm/capsule): built
# from the module proxy in a wrapper module of its own (scripts/install-helm.sh).
bash "$root/scripts/install-helm.sh"

# Azurite, the Azure Storage emulator that bucket/azblob's tests run
# (internal/azuritetest): the npm package, pinned, in .tools/azurite, its
# azurite-blob command linked into .tools/bin. 3.35.0 is the newest
# release that supports the machines' Node.js 20 (3.36 and later declare
# Node.js 21 or 22).
azurite_version=3.35.0
azurite_dir="$root/.tools/azurite"
have_azurite="$(node -p "require('$azurite_dir/node_modules/azurite/package.json').version" 2>/dev/null || true)"
if [[ "$have_azurite" == "$azurite_version" && -e "$bin/azurite-blob" ]]; then
	echo "install-tools: azurite $azurite_version already in $azurite_dir"
else
	if ! command -v npm >/dev/null; then
		echo "install-tools: azurite needs Node.js and npm (apt-get install nodejs npm)" >&2
		exit 1
	fi
	echo "install-tools: installing azurite $azurite_version (${have_azurite:-absent} before) into $azurite_dir"
	mkdir -p "$azurite_dir"
	npm install --prefix "$azurite_dir" --no-audit --no-fund --save-exact "azurite@$azurite_version"
	ln -sfn ../azurite/node_modules/.bin/azurite-blob "$bin/azurite-blob"
fi
