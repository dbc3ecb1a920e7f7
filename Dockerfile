# capsule: one image for workers, the API and the scanner.
# The runtime image carries the database client tools the engines drive
# (pg_dump/pg_restore, mariadb-dump/mariadb, redis-cli is not needed:
# the redis engine speaks the protocol itself) and redis-server, which a
# redis verification starts as its scratch server (never as a service).
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
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates postgresql-client-15 mariadb-client redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/capsule --create-home capsule
COPY --from=build /out/capsule /usr/local/bin/capsule
# The cnvrg operator's Deployment runs "/opt/app-root/capsule start" (the
# old capsule service's path): this image runs in its place unchanged.
RUN mkdir -p /opt/app-root && ln -s /usr/local/bin/capsule /opt/app-root/capsule
USER capsule
ENTRYPOINT ["/usr/local/bin/capsule"]
CMD ["worker"]
