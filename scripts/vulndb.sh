#!/usr/bin/env bash
# Builds an offline copy of the Go vulnerability database, for govulncheck's
# -db file://..., into <repo>/.tools/vulndb/<VULNDB_VERSION>, and prints that
# directory. scripts/govulncheck.sh uses it when vuln.go.dev cannot be
# reached (this project's machines reach only the package registries).
#
# The source is golang.org/x/vulndb, the database's own repository, from the
# Go module proxy at a pinned pseudo-version: its data/osv/ holds every
# report as an OSV JSON file, and its cmd/indexdb writes them out in the
# layout vuln.go.dev serves (index/db.json, index/modules.json,
# ID/<GO-ID>.json). indexdb leaves the database's "modified" time zero; it is
# set to the pinned commit's time, so govulncheck reports how old the data
# is. The same pin gives the same database on every machine.
#
# Idempotent: a built database is left alone, so a warm run costs nothing.
# A cold run downloads x/vulndb (25 MB) and indexdb's dependencies and
# builds indexdb: about a minute and a half on 2 cores.
#
# To move to newer data, set VULNDB_VERSION to a newer pseudo-version of
# golang.org/x/vulndb that the module proxy serves (and say so in the
# README's Development section).
set -euo pipefail

VULNDB_VERSION="${VULNDB_VERSION:-v0.0.0-20261105234957-e22db6528018}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/.tools/vulndb/$VULNDB_VERSION"
if [[ -s "$out/index/db.json" && -s "$out/index/modules.json" ]]; then
	echo "$out"
	exit 0
fi

mod="golang.org/x/vulndb@$VULNDB_VERSION"
echo "vulndb: building the offline vulnerability database from $mod into $out" >&2
info="$(go mod download -json "$mod")"
src="$(jq -r .Dir <<<"$info")"
stamp="$(jq -r .Time "$(jq -r .Info <<<"$info")")" # the commit's time, e.g. 2026-11-05T23:49:57Z
if [[ ! -d "$src/data/osv" || -z "$stamp" || "$stamp" == null ]]; then
	echo "vulndb: $mod has no data/osv or no commit time (go mod download said: $info)" >&2
	exit 1
fi

mkdir -p "$root/.tools/vulndb"
tmp="$(mktemp -d "$root/.tools/vulndb/.build-XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# indexdb validates every entry as it loads it; a malformed report fails
# the build here rather than a scan later.
go run "golang.org/x/vulndb/cmd/indexdb@$VULNDB_VERSION" -vulns "$src/data/osv" -out "$tmp/db" >&2
printf '{"modified":"%s"}\n' "$stamp" >"$tmp/db/index/db.json"
gzip -9nc "$tmp/db/index/db.json" >"$tmp/db/index/db.json.gz"
rm -rf "$out"
mv "$tmp/db" "$out"
echo "vulndb: $(find "$out/ID" -name "*.json" | wc -l) entries, modified $stamp" >&2
echo "$out"
