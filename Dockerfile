# capsule: one image for workers, the API and the scanner.
# The runtime image carries the database client tools the engines drive
# (pg_dump/pg_restore of PostgreSQL 12 to 17, mariadb-dump/mariadb; redis-cli is not needed:
# the redis engine speaks the protocol itself), redis-server, which a
# redis verification starts as its scratch server (never as a service),
# and PostgreSQL's server programs of 12 to 17, which a point-in-time
# restore starts as its temporary server on scratch space (never as a
# service: no cluster is created at install).
# go.mod's toolchain line: the Go that capsule's tests and govulncheck run.
FROM golang:1.27.3-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=devel
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/cnvrg/capsule/internal/version.version=${VERSION}" \
      -o /out/capsule ./cmd/capsule

FROM debian:bookworm-slim
# PostgreSQL's client programs of every supported major (12 to 17), from
# the PGDG apt repository, each in /usr/lib/postgresql/<major>/bin: capsule
# runs the pg_dump of the server's own major (engines/postgres, BinGlobs).
# Majors past their end of life leave apt.postgresql.org for its archive,
# which the second line adds.
ARG PG_MAJORS="12 13 14 15 16 17"
# PostgreSQL's server programs (postgres, initdb, pg_ctl: the
# postgresql-<major> packages) of every major a point-in-time restore may
# meet: it replays WAL in a temporary server of the base backup's own
# major (pitr, engines/postgres BinDir). About 54 MB installed per major,
# plus LLVM and ICU once (README, "The image"); an image that never
# restores to a point in time may set this to "" to leave them out.
ARG PG_SERVER_MAJORS="12 13 14 15 16 17"
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && install -d /usr/share/postgresql-common/pgdg \
 && curl -fsSLo /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc https://www.postgresql.org/media/keys/ACCC4CF8.asc \
 && echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" > /etc/apt/sources.list.d/pgdg.list \
 && echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt-archive.postgresql.org/pub/repos/apt bookworm-pgdg-archive main" >> /etc/apt/sources.list.d/pgdg.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends $(for v in $PG_MAJORS; do echo postgresql-client-$v; done) mariadb-client redis-server postgresql-common \
 && sed -ri 's/^#? *create_main_cluster *=.*$/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf \
 && grep -q '^create_main_cluster = false' /etc/postgresql-common/createcluster.conf \
 && if [ -n "$PG_SERVER_MAJORS" ]; then apt-get install -y --no-install-recommends $(for v in $PG_SERVER_MAJORS; do echo postgresql-$v; done); fi \
 && for v in $PG_MAJORS; do /usr/lib/postgresql/$v/bin/pg_dump --version; done \
 && for v in $PG_SERVER_MAJORS; do /usr/lib/postgresql/$v/bin/postgres --version && /usr/lib/postgresql/$v/bin/initdb --version && /usr/lib/postgresql/$v/bin/pg_ctl --version; done \
 && test -z "$(ls /etc/postgresql 2>/dev/null)" \
 && apt-get purge -y curl && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/capsule --create-home capsule
COPY --from=build /out/capsule /usr/local/bin/capsule
# The cnvrg operator's Deployment runs "/opt/app-root/capsule start" (the
# old capsule service's path): this image runs in its place unchanged.
RUN mkdir -p /opt/app-root && ln -s /usr/local/bin/capsule /opt/app-root/capsule
USER capsule
ENTRYPOINT ["/usr/local/bin/capsule"]
CMD ["worker"]
