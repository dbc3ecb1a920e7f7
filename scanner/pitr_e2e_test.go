package scanner_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/pgserver/pgservertest"
	"github.com/cnvrg/capsule/pitr"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/scanner"
	"github.com/jackc/pglogrepl"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestWorkerScanPITR runs two "capsule worker --scan" processes over a
// CnvrgApp whose PostgreSQL (a private server that allows replication)
// has the annotation capsule.cnvrg.io/pitr-pg: "true": exactly one of
// them holds the plan's WAL stream, which writes under
// wal/<cluster>/<plan>/ in the plan's bucket, and the scheduled backup
// is a base backup. Removing the annotation stops the stream (the lease
// handed back, the slot left idle, no more WAL objects) without a
// restart; a bad value is one InvalidBackupPlan Event from both; "true"
// again starts it again.
func TestWorkerScanPITR(t *testing.T) {
	f := newFixture(t)
	bin := f.k.binary(t)
	srv, _ := pgservertest.Replication(t, "capsule-scan-pitr-")
	ctx := context.Background()
	plan, cluster := f.ns+"/cnvrg-app/pg", f.ns+"/cnvrg-app"
	ann := scanner.PITRAnnotationPrefix + "pg"
	// The server trusts loopback connections: the password is not checked.
	f.secret("pitr-creds", map[string]string{"POSTGRES_USER": "postgres", "POSTGRES_DB": "postgres", "POSTGRES_PASSWORD": "unused"})
	app := f.app("cnvrg-app", func(u *unstructured.Unstructured) {
		set(t, u, int64(srv.Port), "spec", "dbs", "pg", "port")
		set(t, u, "pitr-creds", "spec", "dbs", "pg", "credsRef")
		set(t, u, "pitr-creds", "spec", "dbs", "pg", "backup", "credsRef")
		set(t, u, false, "spec", "dbs", "redis", "backup", "enabled")
		u.SetAnnotations(map[string]string{ann: "true"})
	})
	src := engines.Source{Name: plan, Engine: "postgres", Config: map[string]any{"url": srv.URL("postgres"), "pitr": true}}
	sql := func(q string) {
		t.Helper()
		conn, err := srv.Connect(ctx, "postgres")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	sql(`CREATE TABLE marks (id serial PRIMARY KEY, pad text)`)
	// writeWAL makes WAL and ends its segment, so that it is sent at once.
	writeWAL := func() {
		t.Helper()
		sql(`INSERT INTO marks (pad) SELECT repeat('x', 100) FROM generate_series(1, 1000)`)
		sql(`SELECT pg_switch_wal()`)
	}

	type proc struct {
		name   string
		stderr *lockedBuffer
		exited chan error
	}
	// Long enough that a renewal never misses on a busy machine: a second
	// holder here would be a takeover, not two holders at once.
	const lease = 5 * time.Second
	var procs []*proc
	for _, name := range []string{"worker-1", "worker-2"} {
		cmd := exec.Command(bin, "worker", "--scan", "--kubeconfig", f.k.conf, "--namespaces", f.ns, "--service-host", "127.0.0.1",
			"--name", name, "--poll", "200ms", "--lease", lease.String(), "--scan-tick", "500ms", "--log-format", "text")
		cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+t.TempDir())
		p := &proc{name: name, stderr: &lockedBuffer{}, exited: make(chan error, 1)}
		cmd.Stderr = p.stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { p.exited <- cmd.Wait() }()
		procs = append(procs, p)
		t.Cleanup(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case <-p.exited:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				<-p.exited
			}
			if t.Failed() || os.Getenv("CAPSULE_TEST_SHOW_LOG") != "" {
				t.Logf("%s:\n%s", name, p.stderr.String())
			}
		})
	}
	// The processes are outside the test: what they do is read from the
	// bucket, the server and their logs, as an operator would.
	waitFor := func(what string, timeout time.Duration, cond func() bool) {
		t.Helper()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(timeout)
		for !cond() {
			select {
			case <-tick.C:
			case <-deadline:
				t.Fatalf("timed out after %s waiting for %s", timeout, what)
			}
			for _, p := range procs {
				select {
				case err := <-p.exited:
					t.Fatalf("%s exited while waiting for %s: %v", p.name, what, err)
				default:
				}
			}
		}
	}
	segments := func() []pitr.Segment {
		t.Helper()
		segs, err := pitr.ListSegments(ctx, f.bucket, cluster, plan)
		if err != nil {
			t.Fatal(err)
		}
		return segs
	}
	end := func(segs []pitr.Segment) uint64 {
		var e uint64
		for _, s := range segs {
			e = max(e, uint64(s.End))
		}
		return e
	}
	currentLSN := func() uint64 {
		t.Helper()
		conn, err := srv.Connect(ctx, "postgres")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var lsn string
		if err := conn.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsn); err != nil {
			t.Fatal(err)
		}
		l, err := pglogrepl.ParseLSN(lsn)
		if err != nil {
			t.Fatal(err)
		}
		return uint64(l)
	}
	type lockBody struct {
		Holder   string `json:"holder"`
		Attempt  int    `json:"attempt"`
		Released bool   `json:"released"`
	}
	readLock := func() (lockBody, bool) {
		t.Helper()
		data, _, err := bucket.GetBytes(ctx, f.bucket, pitr.LockKey(cluster, plan))
		if err != nil {
			return lockBody{}, false
		}
		var l lockBody
		if err := json.Unmarshal(data, &l); err != nil {
			t.Fatalf("the stream's lock: %v", err)
		}
		return l, true
	}
	holders := func() []string {
		var hs []string
		for _, p := range procs {
			if strings.Contains(p.stderr.String(), "holding the WAL stream") {
				hs = append(hs, p.name)
			}
		}
		return hs
	}

	// The stream: WAL objects under wal/<cluster>/<plan>/ of the bucket
	// the CnvrgApp's bucketRef names, up to what the server wrote.
	writeWAL()
	target := currentLSN()
	waitFor("the WAL stream to reach the server's position", 90*time.Second, func() bool { return end(segments()) >= target })
	prefix := pitr.SourcePrefix(cluster, plan)
	if !strings.HasPrefix(prefix, "wal/") || !strings.Contains(prefix, requests.Segment(plan)) {
		t.Fatalf("prefix %s", prefix)
	}
	n := 0
	if err := bucket.Walk(ctx, f.bucket, prefix, func(bucket.ObjectInfo) error { n++; return nil }); err != nil || n == 0 {
		t.Fatalf("%d objects under %s in bucket %s: %v", n, prefix, f.bucketName, err)
	}

	t.Run("one holder across the replicas", func(t *testing.T) {
		// A second holder would show over a few lease lengths: there is
		// no signal for "nothing happened", so this waits for the time
		// to pass while the stream keeps writing.
		for range 3 {
			writeWAL()
			<-time.After(lease)
		}
		target := currentLSN()
		waitFor("the stream to keep up", 30*time.Second, func() bool { return end(segments()) >= target })
		hs := holders()
		if len(hs) != 1 {
			t.Fatalf("the replicas that held the stream: %v, want exactly one", hs)
		}
		l, ok := readLock()
		if !ok || l.Holder != hs[0] || l.Released || l.Attempt != 1 {
			t.Errorf("the stream's lock %+v (found %v), want held by %s as attempt 1", l, ok, hs[0])
		}
		for _, s := range segments() {
			if s.Attempt != 1 {
				t.Errorf("%s was written by attempt %d, want only the one holder's (1)", s.Key, s.Attempt)
			}
		}
		if spans := pitr.Spans(segments()); len(spans) != 1 {
			t.Errorf("WAL in %d spans, want one with no gap: %+v", len(spans), spans)
		}
		for _, p := range procs {
			if !strings.Contains(p.stderr.String(), "point-in-time recovery on: competing for the WAL stream") {
				t.Errorf("%s never competed for the stream", p.name)
			}
		}
	})

	t.Run("the scheduled backup is a base backup", func(t *testing.T) {
		var entries []index.Entry
		waitFor("the plan's first backup", 90*time.Second, func() bool {
			var err error
			entries, err = index.List(ctx, f.bucket, index.Filter{Cluster: cluster, Source: plan})
			if err != nil {
				t.Fatal(err)
			}
			return len(entries) > 0
		})
		if e := entries[0]; e.Status != requests.StatusSucceeded || e.Format != postgres.FormatBase {
			t.Errorf("backup %s: %s, format %s, want a succeeded base backup (%s)", e.BackupID, e.Status, e.Format, postgres.FormatBase)
		}
	})

	// Removing the annotation stops the stream, with no restart.
	holder := holders()[0]
	f.update("cnvrg-app", func(u *unstructured.Unstructured) { u.SetAnnotations(nil) })
	waitFor("the stream to stop", 30*time.Second, func() bool {
		l, ok := readLock()
		st, err := postgres.Slot(ctx, src)
		return ok && l.Released && err == nil && st.Exists && !st.Active
	})
	t.Run("removing the annotation stops the stream", func(t *testing.T) {
		for _, p := range procs {
			if p.name == holder && !strings.Contains(p.stderr.String(), "point-in-time recovery off: stopping the WAL stream") {
				t.Errorf("%s did not say it stopped the stream", p.name)
			}
		}
		before := segments()
		writeWAL()
		// Nothing may be written now: wait well past the stream's flush
		// interval (1s) and a lease.
		<-time.After(lease + 2*time.Second)
		if after := segments(); len(after) != len(before) {
			t.Errorf("%d WAL objects after the stream stopped, %d before", len(after), len(before))
		}
		if st, err := postgres.Slot(ctx, src); err != nil || st.Active {
			t.Errorf("slot %+v, %v: want no WAL sender", st, err)
		}
	})

	t.Run("a bad value is one InvalidBackupPlan Event", func(t *testing.T) {
		f.update("cnvrg-app", func(u *unstructured.Unstructured) { u.SetAnnotations(map[string]string{ann: "yes"}) })
		invalid := func() []corev1.Event { return f.invalidPlanEvents(t, "cnvrg-app") }
		// Each replica logs the problem, then writes the Event; the
		// second write of the same Event fails as already there.
		waitFor("both replicas to report the bad value, and its Event", 30*time.Second, func() bool {
			for _, p := range procs {
				if !strings.Contains(p.stderr.String(), "the backups go on without point-in-time recovery") {
					return false
				}
			}
			return len(invalid()) > 0
		})
		found := invalid()
		if len(found) != 1 {
			t.Fatalf("%d InvalidBackupPlan Events, want exactly 1 from 2 replicas: %+v", len(found), found)
		}
		e := found[0]
		if e.Type != corev1.EventTypeWarning || !strings.Contains(e.Message, "metadata.annotations."+ann) || !strings.Contains(e.Message, `"yes"`) ||
			e.InvolvedObject.UID != app.GetUID() {
			t.Errorf("event %s %q about %+v, want a Warning on the CnvrgApp naming the annotation", e.Type, e.Message, e.InvolvedObject)
		}
		if l, ok := readLock(); !ok || !l.Released {
			t.Errorf("the stream's lock %+v: want it still released (a bad value is no pitr)", l)
		}
	})

	// "true" again: the stream starts again, without a restart, and
	// takes the handed-back lease at once as attempt 2.
	f.update("cnvrg-app", func(u *unstructured.Unstructured) { u.SetAnnotations(map[string]string{ann: "true"}) })
	writeWAL()
	target = currentLSN()
	waitFor("the stream to start again and catch up", 60*time.Second, func() bool { return end(segments()) >= target })
	if l, ok := readLock(); !ok || l.Released || l.Attempt != 2 {
		t.Errorf("the stream's lock %+v after turning pitr on again, want held as attempt 2", l)
	}
	if spans := pitr.Spans(segments()); len(spans) != 1 {
		t.Errorf("WAL in %d spans after the pause, want one (the slot kept the WAL): %+v", len(spans), spans)
	}
}
