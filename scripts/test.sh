#!/usr/bin/env bash
# Runs every test capsule has, on a fresh machine as on a developer's:
# installs the pinned test tools, makes sure the database servers are up,
# checks formatting, vet and known vulnerabilities (govulncheck), then runs
# the tests (with the race detector on the packages with concurrency). S3
# servers are started by the tests themselves on free loopback ports and
# stopped when they end.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# The Go of go.mod's toolchain line (the go command fetches it from the
# module proxy on first use): this machine's own Go ignores that line.
export GOTOOLCHAIN="$(awk '$1 == "toolchain" { print $2 }' go.mod)"

# step NAME: prints a phase header with the seconds since the start, so a
# slow CI run shows where its time went (a cold Go cache builds etcd and
# kube-apiserver from source: most of a first run on a new machine).
step() { echo "== $* (${SECONDS}s)"; }

step "install tools"
bash scripts/install-tools.sh
bash scripts/envtest-assets.sh
bash scripts/services.sh
bash scripts/install-browser.sh
export PATH="$root/.tools/bin:$PATH"
export CAPSULE_VERSITYGW="$root/.tools/bin/versitygw"
export KUBEBUILDER_ASSETS="$root/.tools/envtest"

step gofmt
unformatted="$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.tools/*'))"
if [[ -n "$unformatted" ]]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
step go vet
go vet ./...
# Modules of their own, so that their dependencies stay out of capsule's
# go.mod (go ./... from the root does not reach them): the browser test
# (chromedp) and the FerretDB stand-in that engines/mongodb's tests run.
nested_modules=(e2e/browser internal/tools/ferretdb)
for m in "${nested_modules[@]}"; do
	(cd "$m" && go vet ./...)
done

# Known vulnerabilities that capsule's code reaches (pinned govulncheck;
# offline database when vuln.go.dev cannot be reached).
step govulncheck
bash scripts/govulncheck.sh

# Packages whose correctness is about concurrency run under -race (the
# postgres engine scans the archive and runs ANALYZE in goroutines).
race_pkgs=(./alert/... ./bucket/... ./watcher/... ./executor/... ./client/... ./internal/... ./retention/... ./api/... ./metrics/... ./notify/... ./fleet/... ./lease/... ./maintenance/... ./engines/postgres/...)
all_pkgs=$(go list ./... | grep -v -E '/(alert|bucket|watcher|executor|client|internal|retention|api|metrics|notify|fleet|lease|maintenance|engines/postgres)(/|$)')

# Every suite runs even when an earlier one fails, so that one red run
# shows every failure; the script fails at the end if any did.
failed=()
step "go test -race ${race_pkgs[*]}"
go test -race -count=1 -timeout 15m "${race_pkgs[@]}" || failed+=("race suites")
step "go test (the rest)"
go test -count=1 -timeout 20m $all_pkgs || failed+=("the rest")
step "go test ./e2e/browser/... (its own module)"
(cd e2e/browser && go test -count=1 -timeout 10m ./...) || failed+=("e2e/browser")
if ((${#failed[@]})); then
	step "FAILED: ${failed[*]}"
	exit 1
fi
step "done"
