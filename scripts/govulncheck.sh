#!/usr/bin/env bash
# Runs govulncheck (source mode, capsule's packages, not their tests) and
# fails when capsule's code reaches a known vulnerability -- a call path
# from capsule into the vulnerable function -- unless
# scripts/govulncheck.allow lists that vulnerability and module with the
# reason it stays. Vulnerabilities only in imported packages or required
# modules that capsule does not call are counted, not failed on.
#
# govulncheck is the pinned binary of scripts/install-tools.sh, built by
# the Go that runs this script. The
# database is vuln.go.dev when it answers, else the offline copy that
# scripts/vulndb.sh builds from a pinned golang.org/x/vulndb (the only way
# in on this project's machines, which reach no host but the package
# registries). CAPSULE_VULNDB=offline forces the pinned copy (reproducible
# results), CAPSULE_VULNDB=online forces vuln.go.dev, any other value is
# passed to -db as is.
#
# The full JSON report is kept in .tools/govulncheck.json.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# Scan with the standard library of the Go that builds capsule.
export GOTOOLCHAIN="$(awk '$1 == "toolchain" { print $2 }' go.mod)"

bin="$root/.tools/bin/govulncheck-$(go env GOVERSION)"
if [[ ! -x "$bin" ]]; then
	echo "govulncheck: $bin is missing: run bash scripts/install-tools.sh" >&2
	exit 1
fi

online=https://vuln.go.dev
case "${CAPSULE_VULNDB:-auto}" in
auto)
	if curl -fsS --max-time 10 -o /dev/null "$online/index/db.json" 2>/dev/null; then
		db="$online"
	else
		echo "govulncheck: $online cannot be reached: using the pinned offline database"
		db="file://$(bash scripts/vulndb.sh)"
	fi
	;;
online) db="$online" ;;
offline) db="file://$(bash scripts/vulndb.sh)" ;;
*) db="$CAPSULE_VULNDB" ;;
esac

report="$root/.tools/govulncheck.json"
# -format json exits 0 whatever it finds; it fails only when it cannot
# load the code or the database.
"$bin" -db "$db" -format json ./... >"$report"

jq -r 'select(.config) | .config |
	"govulncheck \(.scanner_version), \(.go_version), database \(.db) (modified \(.db_last_modified // "unknown"))"' "$report"

# One line per (vulnerability, module) that capsule's code calls:
# ID <tab> module <tab> found version <tab> fixed version <tab> summary.
reachable="$(jq -rs '
	(map(select(.osv) | {key: .osv.id, value: .osv.summary}) | from_entries) as $summary
	| map(select(.finding and .finding.trace[0].function) | .finding
		| [.osv, .trace[0].module, (.trace[0].version // "?"), (.fixed_version // "none"), ($summary[.osv] // "")])
	| unique | .[] | @tsv' "$report")"
# The others: IDs whose deepest finding is a package capsule imports, or
# only a module it requires.
others() {
	jq -rs --arg level "$1" '
		map(select(.finding) | .finding | {id: .osv, level: (if .trace[0].function then "symbol" elif .trace[0].package then "package" else "module" end)})
		| group_by(.id) | map(select(map(.level) as $l | ($level == "package" and ($l | index("symbol") | not) and ($l | index("package")))
			or ($level == "module" and ($l | index("symbol") | not) and ($l | index("package") | not))))
		| map(.[0].id) | join(" ")' "$report"
}
imported="$(others package)"
required="$(others module)"

# allowed ID MODULE: prints the reason scripts/govulncheck.allow gives.
allowed() {
	awk -v id="$1" -v mod="$2" '$1 == id && $2 == mod { $1 = ""; $2 = ""; sub(/^ +/, ""); print; found = 1; exit } END { exit !found }' \
		<(grep -v '^[[:space:]]*#' scripts/govulncheck.allow 2>/dev/null || true)
}

failed=0
reached=0
while IFS=$'\t' read -r id module found fixed summary; do
	[[ -z "$id" ]] && continue
	reached=$((reached + 1))
	if reason="$(allowed "$id" "$module")"; then
		echo "  allowed  $id $module@$found (fixed in $fixed): $summary -- $reason"
	else
		echo "  FAIL     $id $module@$found (fixed in $fixed): $summary"
		failed=$((failed + 1))
	fi
done <<<"$reachable"
# Lines of the allow list that nothing reaches any more.
while read -r id module _; do
	[[ -z "$id" || "$id" == \#* ]] && continue
	if ! grep -q "^$id"$'\t'"$module"$'\t' <<<"$reachable"; then
		echo "  stale    $id $module: scripts/govulncheck.allow lists it, capsule no longer reaches it: remove the line"
	fi
done < <(cat scripts/govulncheck.allow 2>/dev/null || true)
echo "govulncheck: $reached reachable, $failed of them not allowed; not called by capsule: in imported packages [${imported:-none}], in required modules [${required:-none}]"
if ((failed > 0)); then
	echo "govulncheck: move to the fixed versions, or list each in scripts/govulncheck.allow with the reason it stays (and name it in the README)" >&2
	exit 1
fi
