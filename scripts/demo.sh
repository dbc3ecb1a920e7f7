#!/usr/bin/env bash
# The main job, end to end, on the embedded default bucket (a local
# directory): build capsule, start a worker, back up a sample directory,
# restore it elsewhere, show that the copy matches, and print the backup's
# index. Everything the demo writes stays under .demo/ and the default
# bucket directory (capsule prints where it is).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
demo="$root/.demo"

echo "== build"
go build -o bin/capsule ./cmd/capsule
capsule() { "$root/bin/capsule" --config "$demo/capsule.yaml" --log-format text "$@"; }

echo "== a sample directory and a config that names it"
rm -rf "$demo"
mkdir -p "$demo/sample/docs" "$demo/sample/bin"
for i in $(seq 1 50); do echo "line $i of a document capsule keeps" >> "$demo/sample/docs/notes.txt"; done
head -c 2000000 /dev/urandom > "$demo/sample/bin/blob.dat"
chmod 0750 "$demo/sample/bin"
ln -s docs/notes.txt "$demo/sample/latest"
cat > "$demo/capsule.yaml" <<YAML
# No bucket: capsule uses its embedded default, a local directory.
cluster: demo
worker:
  poll: 500ms
  lease: 15s
sources:
  sample:
    engine: files
    path: $demo/sample
  restored:
    engine: files
    path: $demo/restored
YAML

echo "== start a worker"
"$root/bin/capsule" --config "$demo/capsule.yaml" --log-format text worker --name demo-worker > "$demo/worker.log" 2>&1 &
worker=$!
trap 'kill $worker 2>/dev/null || true; wait $worker 2>/dev/null || true; echo "(worker stopped; its log is $demo/worker.log)"' EXIT

echo "== back up the sample directory"
id="$(capsule backup sample --label demo=true)"
echo "request $id"
capsule status "$id" --wait

echo "== restore it into another directory"
capsule restore "$id" --to restored --wait

echo "== compare"
diff -r --no-dereference "$demo/sample" "$demo/restored"
echo "restored tree matches the sample (contents, symlinks)"

echo "== verify it by restoring into scratch space"
capsule verify "$id" --wait

echo "== the catalog and the backup's index"
capsule ls
capsule describe "$id"
