package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/requests"
)

// cliEnv is a user's setup: a local-directory bucket, a config file with
// two files sources (data, with a few files, and copy), and the real
// commands run in-process.
type cliEnv struct {
	t                      *testing.T
	dir, bucketDir, config string
	data                   string
	extraEnv               map[string]string
}

func newCLIEnv(t *testing.T) *cliEnv {
	t.Helper()
	dir := t.TempDir()
	e := &cliEnv{t: t, dir: dir, bucketDir: filepath.Join(dir, "bucket"), data: filepath.Join(dir, "data")}
	if err := os.MkdirAll(filepath.Join(e.data, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, size := range []int{300 << 10, 10} {
		if err := os.WriteFile(filepath.Join(e.data, "sub", fmt.Sprintf("f%d", i)), bytes.Repeat([]byte{byte('a' + i)}, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(e.bucketDir, 0o755); err != nil {
		t.Fatal(err)
	}
	e.config = filepath.Join(dir, "capsule.yaml")
	cfg := fmt.Sprintf("sources:\n  data:\n    engine: files\n    path: %s\n  copy:\n    engine: files\n    path: %s\n", e.data, filepath.Join(dir, "copy"))
	if err := os.WriteFile(e.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// run runs one command as a user would type it and returns its output
// and exit code.
func (e *cliEnv) run(args ...string) (out, errOut string, code int) {
	e.t.Helper()
	return e.runCtx(context.Background(), args...)
}

func (e *cliEnv) runCtx(ctx context.Context, args ...string) (out, errOut string, code int) {
	e.t.Helper()
	var o, eo bytes.Buffer
	a := newApp(&o, &eo, func(k string) string { return e.extraEnv[k] })
	cmd := a.root()
	all := append([]string{"--config", e.config, "--bucket", "file://" + e.bucketDir, "--log-level", "error"}, args...)
	cmd.SetArgs(all)
	err := cmd.ExecuteContext(ctx)
	if err != nil {
		fmt.Fprintln(&eo, "capsule:", err)
		return o.String(), eo.String(), exitCode(err)
	}
	return o.String(), eo.String(), 0
}

// must runs a command that must succeed and returns its output.
func (e *cliEnv) must(args ...string) string {
	e.t.Helper()
	out, errOut, code := e.run(args...)
	if code != 0 {
		e.t.Fatalf("capsule %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// work runs a worker until every pending request is done.
func (e *cliEnv) work(name string) {
	e.t.Helper()
	e.must("worker", "--once", "--name", name, "--unsafe-bucket")
}

// backup makes a backup of data through the CLI and a worker, and
// returns its id.
func (e *cliEnv) backup() string {
	e.t.Helper()
	id := strings.TrimSpace(e.must("backup", "data"))
	e.work("w-backup")
	var st client.Status
	if err := json.Unmarshal([]byte(e.must("status", id, "-o", "json")), &st); err != nil || st.Status != requests.StatusSucceeded {
		e.t.Fatalf("backup %s: %v %+v", id, err, st)
	}
	return id
}

func (e *cliEnv) bucket() bucket.Bucket {
	e.t.Helper()
	fb, err := fs.New(e.bucketDir)
	if err != nil {
		e.t.Fatal(err)
	}
	return bucket.Prefixed(fb, "capsule/")
}

// requestsWritten lists the keys under requests/.
func (e *cliEnv) requestsWritten() []string {
	e.t.Helper()
	var keys []string
	if err := bucket.Walk(context.Background(), e.bucket(), requests.RequestsPrefix, func(o bucket.ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
	return keys
}

// TestMistakesCaughtAtThePrompt makes each mistake of issue #16 as a
// user would: an unknown source, an unknown backup id, an option the
// engine does not take, --timeout without --wait, a bad -o, an unknown
// flag, a target of another engine. Each exits 4 with a message that
// names the mistake and what is known, and writes no request; with
// --no-check the request is written for the worker to judge.
func TestMistakesCaughtAtThePrompt(t *testing.T) {
	e := newCLIEnv(t)
	id := e.backup()
	before := len(e.requestsWritten())

	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"backup", "dta"}, []string{`source "dta" is not a source here`, "the config file has copy, data", "has backups of data", "--no-check"}},
		{[]string{"restore", "01jzzzzzzzzzzzzzzzzzzzzzzz"}, []string{"backup 01jzzzzzzzzzzzzzzzzzzzzzzz: no such backup in the bucket"}},
		{[]string{"verify", "01jzzzzzzzzzzzzzzzzzzzzzzz"}, []string{"no such backup"}},
		{[]string{"restore", id, "--to", "copy", "--option", "bogus=1"}, []string{`engine files has no restore option "bogus" (it takes keepPrevious)`}},
		{[]string{"restore", id, "--to", "copy", "--option", "keepPrevious=false"}, []string{`restore option keepPrevious="false": want true`}},
		{[]string{"restore", id, "--to", "cpy"}, []string{`--to "cpy" is not a source here`}},
		{[]string{"backup", "data", "--timeout", "5s"}, []string{"--timeout needs --wait"}},
		{[]string{"backup", "data", "-o", "xml"}, []string{`--output "xml": want table, wide, json or yaml`}},
		{[]string{"backup", "data", "--bogus-flag"}, []string{"unknown flag: --bogus-flag"}},
		{[]string{"restore"}, []string{"restore needs a BACKUP_ID, or --source with --time, --lsn or --latest"}},
		{[]string{"restore", "--time", "2026-01-01T00:00:00Z"}, []string{"--time, --lsn, --latest, --to-dir, --local and --scratch go with --source"}},
		{[]string{"restore", "--source", "data", "--time", "yesterday"}, []string{`--time: "yesterday" is not a time`}},
		{[]string{"restore", "--source", "data"}, []string{"give exactly one of --time, --lsn and --latest"}},
		{[]string{"restore", "--source", "data", "--latest", "--lsn", "0/1"}, []string{"give exactly one of --time, --lsn and --latest"}},
		{[]string{"restore", "--source", "data", "--lsn", "zz"}, []string{`--lsn: "zz" is not a WAL position`}},
		{[]string{"restore", "--source", "data", "--latest"}, []string{"source data is of engine files; point-in-time restores go into postgres"}},
		{[]string{"restore", "--source", "data", "--latest", "--local"}, []string{"source data is of engine files; point-in-time restores go into postgres"}},
		{[]string{"restore", "--source", "data", "--latest", "--scratch", "/tmp"}, []string{"--scratch goes with --local or --to-dir"}},
		{[]string{"restore", id, "--source", "data", "--latest"}, []string{"give a BACKUP_ID or --source, not both"}},
		{[]string{"tail", "--status", "finished"}, []string{`--status "finished"`}},
		{[]string{"status", "01jzzzzzzzzzzzzzzzzzzzzzzz"}, []string{"no such request"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, errOut, code := e.run(tc.args...)
			if code != exitRefused {
				t.Errorf("exit %d, want %d (refused)\n%s%s", code, exitRefused, out, errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr %q\nwant it to say %q", errOut, w)
				}
			}
		})
	}
	if n := len(e.requestsWritten()); n != before {
		t.Errorf("%d requests were written by refused commands", n-before)
	}

	// --no-check writes what the CLI cannot judge; the worker rejects
	// the option from the same list, and --wait exits 2.
	out, errOut, code := e.run("restore", id, "--to", "copy", "--option", "bogus=1", "--no-check", "-o", "json")
	if code != 0 {
		t.Fatalf("restore --no-check: exit %d\n%s%s", code, out, errOut)
	}
	var req requests.Request
	if err := json.Unmarshal([]byte(out), &req); err != nil || req.Options["bogus"] != "1" {
		t.Fatalf("restore --no-check -o json printed %q (%v)", out, err)
	}
	e.work("w-reject")
	out, errOut, code = e.run("status", req.ID, "--wait")
	if code != exitEndedBadly || !strings.Contains(out, "rejected") || !strings.Contains(out, `engine files has no restore option "bogus"`) {
		t.Errorf("status --wait of the unchecked restore: exit %d\n%s%s", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "copy")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the rejected restore touched its target: %v", err)
	}
}

// TestReadOnlyCommandsNeverCreateABucket points the reading commands at
// a mistyped directory: each fails naming it (exit 1), and the
// directory still does not exist.
func TestReadOnlyCommandsNeverCreateABucket(t *testing.T) {
	e := newCLIEnv(t)
	typo := filepath.Join(e.dir, "buckte")
	for _, args := range [][]string{
		{"ls"}, {"describe", "01jzzzzzzzzzzzzzzzzzzzzzzz"}, {"status", "01jzzzzzzzzzzzzzzzzzzzzzzz"}, {"tail"}, {"cancel", "01jzzzzzzzzzzzzzzzzzzzzzzz"},
	} {
		out, errOut, code := e.run(append(args, "--bucket", "file://"+typo)...)
		if code != exitFailed || !strings.Contains(errOut, typo+" does not exist") || !strings.Contains(errOut, "never create a bucket") {
			t.Errorf("%s on a mistyped bucket: exit %d\n%s%s", args[0], code, out, errOut)
		}
		if _, err := os.Stat(typo); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s created %s: %v", args[0], typo, err)
		}
	}
	// A command that writes still makes the local bucket it is given.
	fresh := filepath.Join(e.dir, "fresh")
	if _, errOut, code := e.run("backup", "data", "--bucket", "file://"+fresh); code != 0 {
		t.Fatalf("backup into a new local bucket: exit %d: %s", code, errOut)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("backup did not create its bucket: %v", err)
	}
}

// TestWaitTimeoutAndPendingExplained follows requests that no worker
// claims. With no worker ever seen, --wait --timeout exits 3 (not 1, as
// a usage error did), says the request goes on, and explains that no
// worker left a trace in the bucket. After a worker ran a backup and
// stopped, the explanation names it and its last result; status of the
// pending request says the same.
func TestWaitTimeoutAndPendingExplained(t *testing.T) {
	e := newCLIEnv(t)
	out, errOut, code := e.run("backup", "data", "--wait", "--timeout", "1s", "--explain-after", "0s")
	if code != exitTimeout {
		t.Fatalf("backup --wait --timeout 1s with no worker: exit %d, want %d\n%s%s", code, exitTimeout, out, errOut)
	}
	for _, w := range []string{"--timeout 1s ran out", "is still pending", "capsule status", "no worker has claimed", "no worker has held a lease or written a result in this bucket"} {
		if !strings.Contains(errOut, w) {
			t.Errorf("stderr:\n%s\nwant it to say %q", errOut, w)
		}
	}
	e.work("w-gone") // runs the waiting backup, then stops: a worker that went away

	id := strings.TrimSpace(e.must("backup", "data"))
	_, errOut, code = e.run("status", id, "--wait", "--timeout", "1s", "--explain-after", "0s")
	if code != exitTimeout {
		t.Fatalf("status --wait --timeout: exit %d\n%s", code, errOut)
	}
	if !regexp.MustCompile(`workers seen: w-gone \(last finished backup [0-9a-z]+ succeeded \d+s ago\)`).MatchString(errOut) ||
		!strings.Contains(errOut, "none holds a lease now") {
		t.Errorf("stderr:\n%s\nwant it to name w-gone and its last result", errOut)
	}
	out = e.must("status", id, "--explain-after", "0s")
	if !strings.Contains(out, "Waiting:") || !strings.Contains(out, "w-gone") {
		t.Errorf("status of the pending request:\n%s", out)
	}
	// Under the threshold, nothing is explained yet.
	if out := e.must("status", id); strings.Contains(out, "Waiting:") {
		t.Errorf("status explains a request that waited under 30s:\n%s", out)
	}
}

// TestOutputFormats runs every printing command with -o table, wide,
// json and yaml: json and yaml carry the same data, tables are
// kubectl-style, times are UTC with "Z" (or local with the offset under
// --local), and describe and status are for people.
func TestOutputFormats(t *testing.T) {
	e := newCLIEnv(t)
	id := e.backup()
	rid := strings.TrimSpace(e.must("restore", id, "--to", "copy"))
	e.work("w-restore")
	if err := os.WriteFile(filepath.Join(e.dir, "copy", "sub", "f1"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	rid2 := strings.TrimSpace(e.must("restore", id, "--to", "copy"))
	e.work("w-restore")

	for _, c := range [][]string{{"ls"}, {"describe", id}, {"status", rid}, {"version"}, {"tail"}} {
		jsonOut := e.must(append(c, "-o", "json")...)
		yamlOut := e.must(append(c, "-o", "yaml")...)
		if c[0] == "tail" {
			// One JSON object a line, one YAML document each.
			lines := strings.Split(strings.TrimSpace(jsonOut), "\n")
			docs := strings.Split(strings.TrimPrefix(yamlOut, "---\n"), "---\n")
			if len(lines) != 3 || len(docs) != 3 {
				t.Errorf("tail: %d JSON lines, %d YAML documents; want 3\n%s\n%s", len(lines), len(docs), jsonOut, yamlOut)
				continue
			}
			jsonOut, yamlOut = lines[0], docs[0]
		}
		fromYAML, err := yaml.YAMLToJSON([]byte(yamlOut))
		if err != nil {
			t.Errorf("%s -o yaml: %v\n%s", c[0], err, yamlOut)
			continue
		}
		var a, b any
		if err := json.Unmarshal([]byte(jsonOut), &a); err != nil {
			t.Errorf("%s -o json: %v\n%s", c[0], err, jsonOut)
		}
		_ = json.Unmarshal(fromYAML, &b)
		if ja, _ := json.Marshal(a); string(ja) != string(mustJSON(t, b)) {
			t.Errorf("%s: -o yaml differs from -o json:\n%s\n%s", c[0], ja, mustJSON(t, b))
		}
		for _, o := range []string{"table", "wide"} {
			if out := e.must(append(c, "-o", o)...); strings.TrimSpace(out) == "" {
				t.Errorf("%s -o %s printed nothing", c[0], o)
			}
		}
	}

	table := e.must("ls")
	wide := e.must("ls", "-o", "wide")
	if !regexp.MustCompile(`(?m)^BACKUP ID\s+CLUSTER\s+SOURCE\s+ENGINE\s+STATUS\s+FINISHED\s+SIZE\s+STORED\s+VERIFIED$`).MatchString(table) ||
		!strings.Contains(wide, "WORKER") || strings.Contains(table, "WORKER") || !strings.Contains(wide, "w-backup") {
		t.Errorf("ls table:\n%s\nwide:\n%s", table, wide)
	}
	if !regexp.MustCompile(id + `\s+default\s+data\s+files\s+succeeded\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`).MatchString(table) {
		t.Errorf("ls shows no UTC time with Z:\n%s", table)
	}
	old := time.Local
	time.Local = time.FixedZone("X", 2*3600+30*60)
	local := e.must("ls", "--local")
	time.Local = old
	if !regexp.MustCompile(`T\d\d:\d\d:\d\d\+02:30`).MatchString(local) {
		t.Errorf("ls --local shows no local time with its offset:\n%s", local)
	}

	desc := e.must("describe", id)
	for _, w := range []string{"Backup:", id, "Source:", "data", "Engine:", "files (format", "Artifacts:", "tree.tar", "Verified:", "never"} {
		if !strings.Contains(desc, w) {
			t.Errorf("describe:\n%s\nwant %q", desc, w)
		}
	}

	// A restore's status names the backup's source, its target and the
	// copy it kept; the first restore had nothing to keep.
	st := e.must("status", rid2)
	for _, w := range []string{"Backup:", id + " (of default/data)", "Target:", "copy", "Previous:", ".capsule-prev-" + rid2, "capsule prune-previous"} {
		if !strings.Contains(st, w) {
			t.Errorf("status of the second restore:\n%s\nwant %q", st, w)
		}
	}
	if st := e.must("status", rid); !strings.Contains(st, "none kept") {
		t.Errorf("status of the first restore:\n%s\nwant it to say nothing was kept", st)
	}

	if out := e.must("--version"); !strings.HasPrefix(out, "capsule ") {
		t.Errorf("--version printed %q", out)
	}
	if out := e.must("--help"); !strings.Contains(out, "Exit codes:") || !strings.Contains(out, "3  --timeout ran out") {
		t.Errorf("--help does not document the exit codes:\n%s", out)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestTailFilters writes results of two clusters, with a failure whose
// error spans lines: tail shows the configured cluster's only, one line
// each; --all-clusters, --source, --status and --kind narrow as said.
func TestTailFilters(t *testing.T) {
	e := newCLIEnv(t)
	b := e.bucket()
	ctx := context.Background()
	now := time.Now().UTC()
	write := func(id, cluster, source string, kind requests.Kind, status requests.Status, msg string) {
		r := requests.Result{APIVersion: requests.APIVersion, Kind: "Result", ID: id, RequestKind: kind, Status: status,
			Cluster: cluster, Source: source, Error: msg, Attempts: 1, Worker: "w1", FinishedAt: now}
		data, _ := json.Marshal(r)
		if _, err := bucket.PutBytes(ctx, b, requests.ResultKey(id), data, bucket.PutOptions{IfNoneMatch: true}); err != nil {
			t.Fatal(err)
		}
	}
	write("r1", "default", "data", requests.KindBackup, requests.StatusSucceeded, "")
	write("r2", "default", "data", requests.KindBackup, requests.StatusFailed, "pg_dump: error: connection lost\nDETAIL: server closed\n\tthe connection")
	write("r3", "other", "pg", requests.KindBackup, requests.StatusSucceeded, "")
	write("r4", "default", "uploads", requests.KindRestore, requests.StatusCanceled, "canceled by request")

	ids := func(out string) string {
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if f := strings.Fields(l); len(f) > 3 {
				got = append(got, f[3])
			}
		}
		return strings.Join(got, ",")
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"tail"}, "r1,r2,r4"},
		{[]string{"tail", "--all-clusters"}, "r1,r2,r3,r4"},
		{[]string{"tail", "--source", "data"}, "r1,r2"},
		{[]string{"tail", "--status", "failed,canceled"}, "r2,r4"},
		{[]string{"tail", "--kind", "restore"}, "r4"},
		{[]string{"tail", "--cluster", "other"}, "r3"},
	} {
		out := e.must(tc.args...)
		if got := ids(out); got != tc.want {
			t.Errorf("%s: %s, want %s\n%s", strings.Join(tc.args, " "), got, tc.want, out)
		}
	}
	out := e.must("tail", "--status", "failed")
	if strings.Count(out, "\n") != 1 || !strings.Contains(out, "pg_dump: error: connection lost DETAIL: server closed the connection") {
		t.Errorf("tail of a multi-line error is not one line:\n%q", out)
	}
}

// TestCompletion asks for completions as the shell does (cobra's
// __complete): source names from the config file and the bucket, backup
// ids from the bucket, request ids of waiting requests, -o values.
func TestCompletion(t *testing.T) {
	e := newCLIEnv(t)
	id := e.backup()
	pending := strings.TrimSpace(e.must("backup", "copy"))
	complete := func(args ...string) []string {
		out := e.must(append([]string{"__complete"}, args...)...)
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if !strings.HasPrefix(l, ":") {
				got = append(got, strings.SplitN(l, "\t", 2)[0])
			}
		}
		return got
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"backup", ""}, "copy,data"},
		{[]string{"backup", "d"}, "data"},
		{[]string{"restore", ""}, id},
		{[]string{"describe", id[:6]}, id},
		{[]string{"restore", id, "--to", ""}, "copy,data"},
		{[]string{"status", ""}, pending},
		{[]string{"ls", "-o", ""}, "table,wide,json,yaml"},
	} {
		if got := strings.Join(complete(tc.args...), ","); got != tc.want {
			t.Errorf("complete %q: %s, want %s", tc.args, got, tc.want)
		}
	}
}

// TestProgressLine is what a log of `--wait` keeps: the percentage, the
// bytes of the total, the rate and the time left, from the lease.
func TestProgressLine(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st := &client.Status{ID: "x", Status: requests.StatusRunning, Lease: &requests.Lease{Holder: "w1", Attempt: 1, Progress: &requests.Progress{
		Phase: "restore", Artifact: "tree.tar", Bytes: 300 << 20, StoredBytes: 100 << 20, TotalBytes: 1200 << 20,
		StartedAt: start, UpdatedAt: start.Add(30 * time.Second),
	}}}
	got := progressLine(st)
	want := "running: attempt 1 on w1: restore tree.tar, 25% (300.0 MiB of 1.2 GiB), 100.0 MiB stored, 10.0 MiB/s, ETA 1m30s"
	if got != want {
		t.Errorf("progress line\n got %s\nwant %s", got, want)
	}
	st.Lease.Progress.Estimated = true
	if got := progressLine(st); !strings.Contains(got, "25% (300.0 MiB of 1.2 GiB estimated)") {
		t.Errorf("estimated: %s", got)
	}
}

// TestPrunePrevious restores a backup three times into the same target:
// the second and third keep the tree they replaced. A kept copy from
// 2024 is planted beside them, and a directory that only looks like one.
// prune-previous --dry-run drops nothing; --older-than drops only the
// 2024 copy; without it every kept copy goes, and the target and the
// lookalike stay.
func TestPrunePrevious(t *testing.T) {
	e := newCLIEnv(t)
	id := e.backup()
	for range 3 {
		e.must("restore", id, "--to", "copy")
		e.work("w-restore")
	}
	old := filepath.Join(e.dir, ".copy.capsule-prev-01hmzzzzzz0000000000000000.a1") // a ULID of January 2024
	lookalike := filepath.Join(e.dir, ".copy.capsule-prev-Not-Ours")
	for _, d := range []string{old, lookalike} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	kept := func() []string {
		m, _ := filepath.Glob(filepath.Join(e.dir, ".copy.capsule-prev-*"))
		return m
	}
	if n := len(kept()); n != 4 {
		t.Fatalf("%d kept directories before pruning, want 4: %v", n, kept())
	}

	out := e.must("prune-previous", "copy", "--dry-run")
	if strings.Count(out, "would drop") != 3 || len(kept()) != 4 {
		t.Errorf("--dry-run:\n%s\nleft %v", out, kept())
	}
	out = e.must("prune-previous", "copy", "--older-than", "24h", "-o", "json")
	var rows []prunedCopy
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("-o json: %v\n%s", err, out)
	}
	actions := map[string]string{}
	for _, r := range rows {
		actions[filepath.Base(r.Name)] = r.Action
	}
	if actions[filepath.Base(old)] != "dropped" || len(actions) != 3 {
		t.Errorf("--older-than 24h: %v", actions)
	}
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the 2024 copy is still there: %v", err)
	}
	out = e.must("prune-previous", "copy")
	if strings.Count(out, "dropped") != 2 {
		t.Errorf("prune-previous:\n%s", out)
	}
	if left := kept(); len(left) != 1 || left[0] != lookalike {
		t.Errorf("left after pruning: %v, want only the lookalike", left)
	}
	if got, err := os.ReadFile(filepath.Join(e.dir, "copy", "sub", "f1")); err != nil || string(got) != strings.Repeat("b", 10) {
		t.Errorf("the target changed: %q %v", got, err)
	}
	if _, errOut, code := e.run("prune-previous", "nosuch"); code != exitRefused || !strings.Contains(errOut, `unknown source "nosuch"`) {
		t.Errorf("prune-previous of an unknown source: exit %d: %s", code, errOut)
	}
}
