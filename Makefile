.PHONY: build demo test bench lint

build:
	go build -o bin/capsule ./cmd/capsule

# The main job on the embedded default bucket (a local directory).
demo:
	bash scripts/demo.sh

# Every test, installing what they need first.
test:
	bash scripts/test.sh

lint:
	gofmt -l $$(git ls-files '*.go')
	go vet ./...
