.PHONY: build demo test bench lint vulncheck

# Every go command here runs the Go of go.mod's toolchain line (fetched
# from the module proxy on first use); a GOTOOLCHAIN=local go env ignores it.
export GOTOOLCHAIN := $(shell awk '$$1 == "toolchain" { print $$2 }' go.mod)

build:
	go build -o bin/capsule ./cmd/capsule

# The main job on the embedded default bucket (a local directory).
demo:
	bash scripts/demo.sh

# Every test, installing what they need first.
test:
	bash scripts/test.sh

# The speed benchmarks of bench/ (not run by CI; results in bench/README.md):
# PostgreSQL at two database sizes (built once, then reused), Redis, and the
# request queue (S3 calls per request, throughput, idle polling), and the
# submit→claim latency with SQS notifications.
PGBENCH_FLAGS ?= -sizes 0.5GB,2.4GB -compression zstd-fastest,zstd
# Redis: the fastest of three runs of each step (the machine is shared).
REDISBENCH_FLAGS ?= -runs 3
bench:
	go run ./bench/pgbench $(PGBENCH_FLAGS)
	go run ./bench/redisbench $(REDISBENCH_FLAGS)
	go run ./bench/queuebench
	go test -run '^$$' -bench ClaimLatency -benchtime 1x ./bench/claimlatency

lint:
	gofmt -l $$(git ls-files '*.go')
	go vet ./...

# Known vulnerabilities that capsule's code reaches (also part of make test).
vulncheck:
	bash scripts/install-tools.sh
	bash scripts/govulncheck.sh
