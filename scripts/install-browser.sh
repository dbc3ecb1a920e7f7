#!/usr/bin/env bash
# Installs Debian's Chromium for the page test (e2e/browser), which drives
# it headless over the DevTools protocol. Idempotent: does nothing when a
# Chromium is already on PATH or $CAPSULE_CHROMIUM names one. Without root
# it says what to install and leaves the test to skip.
set -euo pipefail

log() { echo "install-browser: $*"; }

if [[ -n "${CAPSULE_CHROMIUM:-}" && -x "${CAPSULE_CHROMIUM}" ]]; then
	log "using \$CAPSULE_CHROMIUM=$CAPSULE_CHROMIUM"
	exit 0
fi
for name in chromium chromium-browser google-chrome; do
	if command -v "$name" >/dev/null 2>&1; then
		log "$name already installed ($(command -v "$name"))"
		exit 0
	fi
done
if [[ $(id -u) -ne 0 ]]; then
	log "chromium is missing and this is not root: install Debian's chromium package by hand (the page test skips without it)"
	exit 0
fi
log "apt-get update"
apt-get update -qq
log "installing chromium"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
log "chromium installed ($(command -v chromium))"
