#!/usr/bin/env bash
# Makes sure the database servers the engine tests talk to are installed
# and running on their standard loopback ports: PostgreSQL (5432, trust
# auth), MariaDB (3306, root without a password) and the redis-server
# binary (the Redis tests start their own servers on free ports).
# Installs missing Debian packages and starts stopped servers; leaves
# running ones alone. Prints what it does.
set -euo pipefail

log() { echo "services: $*"; }

listening() { # PORT
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_port() { # PORT NAME
	for _ in $(seq 1 60); do
		if listening "$1"; then return 0; fi
		sleep 0.5
	done
	log "$2 did not start listening on 127.0.0.1:$1"
	return 1
}

apt_updated=""
need_pkg() { # COMMAND PACKAGE...
	local cmd="$1"; shift
	if command -v "$cmd" >/dev/null 2>&1; then return 0; fi
	if [[ $(id -u) -ne 0 ]]; then
		log "$cmd is missing and this is not root: install $* by hand"
		return 1
	fi
	if [[ -z "$apt_updated" ]]; then
		log "apt-get update"
		apt-get update -qq
		apt_updated=1
	fi
	log "installing $*"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

postgres() {
	need_pkg pg_dump postgresql postgresql-client
	if ! listening 5432; then
		local ver
		ver="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)"
		if [[ -z "$ver" ]]; then
			log "no PostgreSQL cluster in /etc/postgresql"
			return 1
		fi
		log "starting PostgreSQL $ver"
		pg_ctlcluster --skip-systemctl-redirect "$ver" main start
		wait_port 5432 PostgreSQL
	fi
	# Trust auth for local test connections, as on the project machines.
	if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
		log "PostgreSQL on 5432 does not accept user postgres without a password: the postgres tests need trust auth on 127.0.0.1"
		return 1
	fi
	log "PostgreSQL ready on 127.0.0.1:5432"
}

mariadb() {
	need_pkg mariadb-dump mariadb-server mariadb-client
	if ! listening 3306; then
		log "starting MariaDB"
		start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql >/dev/null 2>&1 ||
			start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
		wait_port 3306 MariaDB
	fi
	log "MariaDB ready on 127.0.0.1:3306"
}

redis() {
	need_pkg redis-server redis-server
	need_pkg redis-cli redis-tools
	log "redis-server $(redis-server --version | awk '{print $3}') available"
}

postgres
mariadb
redis
