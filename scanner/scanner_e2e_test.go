package scanner_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/scanner"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// slotOf reads the slot out of a scheduled request's id.
func slotOf(t *testing.T, id string) time.Time {
	t.Helper()
	i := strings.LastIndexByte(id, '-')
	s, err := time.Parse("20060102t150405z", id[i+1:])
	if err != nil {
		t.Fatalf("id %s: %v", id, err)
	}
	return s
}

// planBackups lists the committed backups of a plan in the bucket.
func planBackups(t *testing.T, b bucket.Bucket, cluster, plan string) []string {
	t.Helper()
	entries, err := index.List(context.Background(), b, index.Filter{Cluster: cluster, Source: plan})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		if e.Plan == plan && e.Status == requests.StatusSucceeded {
			ids = append(ids, e.BackupID)
		}
	}
	slices.Sort(ids)
	return ids
}

// allSee waits until every replica's plans satisfy ok, and returns when.
func allSee(t *testing.T, rec *recorder, rs []*replica, what string, ok func([]scanner.Plan) bool) time.Time {
	t.Helper()
	rec.wait(t, 30*time.Second, what, func() bool {
		for _, r := range rs {
			if !ok(r.sc.Plans()) {
				return false
			}
		}
		return true
	})
	return time.Now()
}

func findPlan(ps []scanner.Plan, name string) (scanner.Plan, bool) {
	for _, p := range ps {
		if p.Name == name {
			return p, true
		}
	}
	return scanner.Plan{}, false
}

// TestScheduledBackups: three replicas (scanner + workers each, no
// leader) and the sample CnvrgApp with 2s periods: exactly one request per
// slot over several slots, real PostgreSQL and Redis backups in the bucket
// the bucketRef Secret names, rotation kept exactly, and changes to the
// CnvrgApp honoured at the next slot; deleting it stops its schedules.
func TestScheduledBackups(t *testing.T) {
	f := newFixture(t)
	rec := newRecorder()
	const period = 2 * time.Second
	pgPlan, redisPlan := f.ns+"/cnvrg-app/pg", f.ns+"/cnvrg-app/redis"
	cluster := f.ns + "/cnvrg-app"
	f.app("cnvrg-app", func(u *unstructured.Unstructured) {
		set(t, u, "2s", "spec", "dbs", "pg", "backup", "period")
		set(t, u, int64(2), "spec", "dbs", "pg", "backup", "rotation")
		set(t, u, "2s", "spec", "dbs", "redis", "backup", "period")
		set(t, u, int64(3), "spec", "dbs", "redis", "backup", "rotation")
	})
	var rs []*replica
	for _, name := range []string{"replica-a", "replica-b", "replica-c"} {
		rs = append(rs, f.replica(name, rec, true))
	}

	// Several slots of both plans, every backup real and successful.
	rec.wait(t, 60*time.Second, "4 successful backups of each plan", func() bool {
		return len(rec.succeeded(pgPlan)) >= 4 && len(rec.succeeded(redisPlan)) >= 4
	})
	t.Run("the workers serve the bucket the Secret names", func(t *testing.T) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		for _, r := range rs {
			if got := rec.fleets[r.name]; len(got) != 1 || !strings.HasPrefix(got[0], "s3://"+f.bucketName+"/capsule/?") {
				t.Errorf("%s serves %v, want the bucket %s", r.name, got, f.bucketName)
			}
		}
	})
	t.Run("the backups are in the bucket", func(t *testing.T) {
		for _, plan := range []string{pgPlan, redisPlan} {
			entries, err := index.List(context.Background(), f.bucket, index.Filter{Cluster: cluster, Source: plan})
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) == 0 {
				t.Fatalf("no backups of %s in bucket %s", plan, f.bucketName)
			}
			e := entries[0]
			want := map[string]string{pgPlan: "postgres", redisPlan: "redis"}[plan]
			if e.Engine != want || e.Plan != plan || e.Bytes == 0 {
				t.Errorf("newest backup of %s: engine %s plan %s bytes %d", plan, e.Engine, e.Plan, e.Bytes)
			}
		}
	})

	// Phase B: lower pg's rotation and disable redis's backups.
	f.update("cnvrg-app", func(u *unstructured.Unstructured) {
		set(t, u, int64(1), "spec", "dbs", "pg", "backup", "rotation")
		set(t, u, false, "spec", "dbs", "redis", "backup", "enabled")
	})
	changed := allSee(t, rec, rs, "every replica to see the change", func(ps []scanner.Plan) bool {
		p, ok := findPlan(ps, pgPlan)
		_, redisOn := findPlan(ps, redisPlan)
		return ok && p.Rotation == 1 && !redisOn
	})
	rec.wait(t, 30*time.Second, "two pg backups after the change, each followed by retention", func() bool {
		n := 0
		for _, run := range rec.retention {
			if run.plan == pgPlan && run.err == nil && slotOf(t, run.id).After(changed) {
				n++
			}
		}
		return n >= 2
	})

	// Phase C: a yearly cron schedule. Its slot (1 January) was never
	// done, so it is caught up once, at once; then the plan is quiet and
	// retention has run after its newest backup.
	f.update("cnvrg-app", func(u *unstructured.Unstructured) {
		set(t, u, "@yearly", "spec", "dbs", "pg", "backup", "period")
	})
	now := time.Now().UTC()
	yearly := requests.SlotID(pgPlan, time.Date(now.Year(), 1, 1, 0, 0, 0, 0, time.UTC))
	rec.wait(t, 30*time.Second, "the caught-up yearly backup, and retention after every pg backup", func() bool {
		ran := map[string]bool{}
		for _, run := range rec.retention {
			if run.err == nil {
				ran[run.id] = true
			}
		}
		for _, id := range rec.submittedOf(pgPlan, requests.KindBackup) {
			if !ran[id] {
				return false
			}
		}
		return ran[yearly]
	})
	t.Run("retention keeps exactly rotation backups", func(t *testing.T) {
		if got := planBackups(t, f.bucket, cluster, pgPlan); len(got) != 1 {
			t.Errorf("pg backups in the bucket: %v, want exactly the rotation, 1", got)
		}
	})

	// Phase D: delete the CnvrgApp.
	f.deleteApp("cnvrg-app")
	deleted := allSee(t, rec, rs, "every replica to drop the plans", func(ps []scanner.Plan) bool { return len(ps) == 0 })
	rec.wait(t, 30*time.Second, "the workers to stop serving the bucket", func() bool {
		for _, r := range rs {
			if len(rec.fleets[r.name]) != 0 {
				return false
			}
		}
		return true
	})
	// Nothing may be submitted over the next two slots: there is no signal
	// for "nothing happened", so this waits for the time to pass.
	<-time.After(2 * period)

	rec.mu.Lock()
	defer rec.mu.Unlock()
	t.Run("exactly one request per slot", func(t *testing.T) {
		for id, who := range rec.submitted {
			if len(who) != 1 {
				t.Errorf("request %s was written by %d replicas: %v", id, len(who), who)
			}
		}
		for _, plan := range []string{pgPlan, redisPlan} {
			ids := rec.submittedOf(plan, requests.KindBackup)
			var slots []time.Time
			for _, id := range ids {
				if id != yearly {
					slots = append(slots, slotOf(t, id))
				}
			}
			if len(slots) < 4 {
				t.Errorf("%s: only %d slots", plan, len(slots))
				continue
			}
			for i := 1; i < len(slots); i++ {
				if d := slots[i].Sub(slots[i-1]); d != period {
					t.Errorf("%s: slots %s and %s are %s apart, want %s (a slot was skipped)", plan, slots[i-1], slots[i], d, period)
				}
			}
		}
	})
	t.Run("every scheduled backup succeeded", func(t *testing.T) {
		for id := range rec.submitted {
			if st := rec.finished[id]; st != requests.StatusSucceeded {
				t.Errorf("request %s: %q, want succeeded", id, st)
			}
		}
	})
	t.Run("a disabled plan stops at the next slot", func(t *testing.T) {
		for _, id := range rec.submittedOf(redisPlan, requests.KindBackup) {
			if slotOf(t, id).After(changed) {
				t.Errorf("redis request %s of a slot after backup.enabled became false (%s)", id, changed.Format(time.RFC3339Nano))
			}
		}
	})
	t.Run("a deleted CnvrgApp has no schedules", func(t *testing.T) {
		for id := range rec.submitted {
			if id != yearly && slotOf(t, id).After(deleted) {
				t.Errorf("request %s of a slot after the CnvrgApp was deleted", id)
			}
		}
	})
	t.Run("retention deleted nothing twice and nothing wrongly", func(t *testing.T) {
		deletedBy := map[string]string{}
		for _, run := range rec.retention {
			if run.err != nil {
				t.Errorf("retention after %s on %s: %v", run.id, run.replica, run.err)
				continue
			}
			rep := run.report
			if run.plan == pgPlan && slotOf(t, run.id).After(changed) && run.rotation != 1 {
				t.Errorf("retention after %s (a slot after the change) kept %d, want the new rotation 1", run.id, run.rotation)
			}
			// Never the last good one; exactly rotation once it deletes.
			if len(rep.Kept) == 0 || len(rep.Kept) > run.rotation || (len(rep.Deleted) > 0 && len(rep.Kept) != run.rotation) {
				t.Errorf("retention after %s on %s (rotation %d) kept %v and deleted %v", run.id, run.replica, run.rotation, rep.Kept, rep.Deleted)
			}
			for _, d := range rep.Deleted {
				if other, dup := deletedBy[d]; dup {
					t.Errorf("backup %s deleted twice: by %s and %s", d, other, run.replica)
				}
				deletedBy[d] = run.replica
			}
		}
		// Every successful backup is either still there or was deleted by a
		// retention run that says so.
		for _, plan := range []string{pgPlan, redisPlan} {
			left := planBackups(t, f.bucket, cluster, plan)
			for _, id := range rec.succeeded(plan) {
				if _, gone := deletedBy[id]; !gone && !slices.Contains(left, id) {
					t.Errorf("backup %s of %s disappeared without a retention run deleting it", id, plan)
				}
				if _, gone := deletedBy[id]; gone && slices.Contains(left, id) {
					t.Errorf("backup %s of %s was reported deleted but is still listed", id, plan)
				}
			}
			if plan == redisPlan && len(left) < 3 {
				t.Errorf("redis backups left: %v, want at least its rotation (3)", left)
			}
		}
	})
}

// TestInvalidPeriodIsAnEvent: a bad period becomes one Warning Event on the
// CnvrgApp (from two replicas) naming the field; the scanners keep
// running, schedule the valid block, and pick up the fix.
func TestInvalidPeriodIsAnEvent(t *testing.T) {
	f := newFixture(t)
	rec := newRecorder()
	pgPlan, redisPlan := f.ns+"/cnvrg-app/pg", f.ns+"/cnvrg-app/redis"
	app := f.app("cnvrg-app", func(u *unstructured.Unstructured) {
		set(t, u, "every day", "spec", "dbs", "pg", "backup", "period")
	})
	rs := []*replica{f.replica("replica-a", rec, false), f.replica("replica-b", rec, false)}
	rec.wait(t, 30*time.Second, "both replicas to report the problem", func() bool {
		return rec.problems["replica-a"] > 0 && rec.problems["replica-b"] > 0
	})
	found := f.invalidPlanEvents(t, "cnvrg-app")
	if len(found) != 1 {
		t.Fatalf("%d InvalidBackupPlan Events, want exactly 1 from 2 replicas: %+v", len(found), found)
	}
	e := found[0]
	if e.Type != corev1.EventTypeWarning || !strings.Contains(e.Message, "spec.dbs.pg.backup.period") || !strings.Contains(e.Message, "every day") {
		t.Errorf("event %s %q, want a Warning naming spec.dbs.pg.backup.period", e.Type, e.Message)
	}
	if e.InvolvedObject.Kind != "CnvrgApp" || e.InvolvedObject.UID != app.GetUID() {
		t.Errorf("event is about %+v, want the CnvrgApp", e.InvolvedObject)
	}
	// The valid block is scheduled, the invalid one is not.
	allSee(t, rec, rs, "the redis plan and no pg plan", func(ps []scanner.Plan) bool {
		_, pg := findPlan(ps, pgPlan)
		_, redis := findPlan(ps, redisPlan)
		return redis && !pg
	})
	// Still alive: the fix is picked up.
	f.update("cnvrg-app", func(u *unstructured.Unstructured) { set(t, u, "30m", "spec", "dbs", "pg", "backup", "period") })
	allSee(t, rec, rs, "the fixed pg plan", func(ps []scanner.Plan) bool {
		p, ok := findPlan(ps, pgPlan)
		return ok && p.Schedule.Period == 30*time.Minute
	})
}

// TestScheduledVerification: "every 2 backups" (the annotation, since the
// shipped CRD prunes fields it does not declare) verifies every other
// backup; the outcome is recorded beside the backup and capsule describe
// shows it.
func TestScheduledVerification(t *testing.T) {
	f := newFixture(t)
	bin := f.k.binary(t)
	rec := newRecorder()
	pgPlan := f.ns + "/cnvrg-app/pg"
	f.app("cnvrg-app", func(u *unstructured.Unstructured) {
		u.SetAnnotations(map[string]string{scanner.VerifyAnnotationPrefix + "pg": "every=2"})
		set(t, u, "2s", "spec", "dbs", "pg", "backup", "period")
		set(t, u, int64(10), "spec", "dbs", "pg", "backup", "rotation")
		set(t, u, false, "spec", "dbs", "redis", "backup", "enabled")
	})
	rs := []*replica{f.replica("replica-a", rec, true), f.replica("replica-b", rec, true)}
	var verifies []string
	rec.wait(t, 90*time.Second, "two finished verifications", func() bool {
		verifies = verifies[:0]
		for _, id := range rec.submittedOf(pgPlan, requests.KindVerify) {
			if rec.finished[id] != "" {
				verifies = append(verifies, id)
			}
		}
		return len(verifies) >= 2
	})
	for _, r := range rs {
		r.stop() // no more backups: the checks below see a still bucket
	}
	rec.mu.Lock()
	for _, id := range verifies {
		if st := rec.finished[id]; st != requests.StatusSucceeded {
			t.Errorf("verification %s ended %s", id, st)
		}
	}
	rec.mu.Unlock()
	t.Run("every other backup is verified", func(t *testing.T) {
		if d := slotOf(t, verifies[1]).Sub(slotOf(t, verifies[0])); d != 4*time.Second {
			t.Errorf("verified backups of slots %s and %s: %s apart, want 2 periods (4s)", slotOf(t, verifies[0]), slotOf(t, verifies[1]), d)
		}
	})
	// The verified backup is the one of the verification's slot.
	backupID := requests.SlotID(pgPlan, slotOf(t, verifies[1]))
	t.Run("the outcome is beside the backup", func(t *testing.T) {
		e, err := index.Find(context.Background(), f.bucket, backupID)
		if err != nil {
			t.Fatal(err)
		}
		if e.Verification == nil || !e.Verification.OK || e.Verification.RequestID != verifies[1] {
			t.Fatalf("backup %s: verification %+v, want an ok one by %s", backupID, e.Verification, verifies[1])
		}
	})
	t.Run("capsule describe shows it", func(t *testing.T) {
		cmd := exec.Command(bin, "describe", backupID, "-o", "json", "--bucket", f.srv.URL(f.bucketName, "capsule/"), "--log-level", "warn")
		cmd.Env = append(os.Environ(), f.srv.Env()...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("capsule describe: %v\n%s", err, stderr.String())
		}
		var got struct {
			BackupID     string `json:"backupId"`
			Plan         string `json:"plan"`
			Verification *struct {
				OK        bool   `json:"ok"`
				RequestID string `json:"requestId"`
			} `json:"verification"`
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("describe output: %v\n%s", err, out)
		}
		if got.BackupID != backupID || got.Plan != pgPlan || got.Verification == nil || !got.Verification.OK || got.Verification.RequestID != verifies[1] {
			t.Errorf("describe shows %s", out)
		}
	})
}

// TestBucketsFollowCnvrgApps: a second CnvrgApp naming another bucket adds
// a watcher on it, which runs its backups; deleting that CnvrgApp removes
// the watcher. No restart.
func TestBucketsFollowCnvrgApps(t *testing.T) {
	f := newFixture(t)
	rec := newRecorder()
	other := f.srv.NewBucket(t)
	f.storageSecret("other-storage", other)
	r := f.replica("replica-a", rec, true)
	f.app("cnvrg-app", func(u *unstructured.Unstructured) {
		set(t, u, false, "spec", "dbs", "redis", "backup", "enabled")
	})
	rec.wait(t, 30*time.Second, "the first bucket", func() bool { return len(rec.fleets[r.name]) == 1 })
	f.app("second", func(u *unstructured.Unstructured) {
		set(t, u, false, "spec", "dbs", "pg", "backup", "enabled")
		set(t, u, "2s", "spec", "dbs", "redis", "backup", "period")
		set(t, u, "other-storage", "spec", "dbs", "redis", "backup", "bucketRef")
	})
	rec.wait(t, 30*time.Second, "a second bucket", func() bool { return len(rec.fleets[r.name]) == 2 })
	secondPlan := f.ns + "/second/redis"
	rec.wait(t, 60*time.Second, "a backup in the second bucket", func() bool {
		for _, id := range rec.succeeded(secondPlan) {
			if rec.finished[id] == requests.StatusSucceeded {
				return true
			}
		}
		return false
	})
	if got := planBackups(t, f.openBucket(other), f.ns+"/second", secondPlan); len(got) == 0 {
		t.Errorf("no backup of %s in bucket %s", secondPlan, other)
	}
	if got := planBackups(t, f.bucket, f.ns+"/second", secondPlan); len(got) != 0 {
		t.Errorf("backups of %s in the first bucket: %v", secondPlan, got)
	}
	f.deleteApp("second")
	rec.wait(t, 30*time.Second, "the second bucket to go", func() bool {
		keys := rec.fleets[r.name]
		return len(keys) == 1 && strings.Contains(keys[0], f.bucketName)
	})
}

// TestScanOnceJSON runs "capsule scan --once -o json": the plans of the
// sample CnvrgApp, no secret in the output, and nothing written to the
// bucket.
func TestScanOnceJSON(t *testing.T) {
	f := newFixture(t)
	f.app("cnvrg-app", nil)
	bin := f.k.binary(t)
	run := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"scan", "--once", "-o", "json", "--kubeconfig", f.k.conf, "--namespaces", f.ns}, args...)...)
		cmd.Env = os.Environ()
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("capsule scan: %v\n%s", err, stderr.String())
		}
		return out
	}
	out := run()
	var res struct {
		Plans []struct {
			Name    string `json:"name"`
			Cluster string `json:"cluster"`
			Source  struct {
				Engine   string         `json:"engine"`
				Host     string         `json:"host"`
				Port     int            `json:"port"`
				Config   map[string]any `json:"config"`
				Password bool           `json:"password"`
			} `json:"source"`
			Bucket struct {
				Bucket      string `json:"bucket"`
				Endpoint    string `json:"endpoint"`
				Credentials string `json:"credentials"`
			} `json:"bucket"`
			Schedule struct {
				Spec string `json:"spec"`
			} `json:"schedule"`
			Rotation int  `json:"rotation"`
			PITR     bool `json:"pitr"`
		} `json:"plans"`
		Problems []scanner.Problem `json:"problems"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(res.Plans) != 2 || len(res.Problems) != 0 {
		t.Fatalf("plans and problems: %s", out)
	}
	pg, rd := res.Plans[0], res.Plans[1]
	cluster := f.ns + "/cnvrg-app"
	if pg.Name != cluster+"/pg" || pg.Cluster != cluster || pg.Source.Engine != "postgres" || pg.Source.Host != "postgres."+f.ns ||
		pg.Source.Port != 5432 || pg.Schedule.Spec != "24h" || pg.Rotation != 5 || !pg.Source.Password {
		t.Errorf("pg plan: %+v", pg)
	}
	if rd.Name != cluster+"/redis" || rd.Source.Engine != "redis" || rd.Source.Port != f.redisPort || rd.Schedule.Spec != "6h" || rd.Rotation != 10 {
		t.Errorf("redis plan: %+v", rd)
	}
	if pg.Bucket.Bucket != f.bucketName || pg.Bucket.Endpoint != f.srv.Endpoint || pg.Bucket.Credentials != "static" {
		t.Errorf("bucket: %+v", pg.Bucket)
	}
	for _, secret := range []string{f.srv.SecretKey, "pw-" + f.pgUser, `"` + f.srv.AccessKey + `"`} {
		if strings.Contains(string(out), secret) {
			t.Errorf("the plan output holds a secret: %s", out)
		}
	}
	if err := json.Unmarshal(run("--cluster", "prod"), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Plans) != 2 || res.Plans[0].Cluster != "prod" {
		t.Errorf("--cluster prod: %+v", res.Plans)
	}
	// Point-in-time recovery: off above, on with the annotation, in the
	// plan and in its source's settings.
	if pg.PITR || pg.Source.Config["pitr"] != nil {
		t.Errorf("pg plan without the annotation: pitr %v, config %v", pg.PITR, pg.Source.Config)
	}
	f.update("cnvrg-app", func(u *unstructured.Unstructured) {
		u.SetAnnotations(map[string]string{scanner.PITRAnnotationPrefix + "pg": "true"})
	})
	res.Plans = nil
	if err := json.Unmarshal(run(), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Plans) != 2 || !res.Plans[0].PITR || res.Plans[0].Source.Config["pitr"] != true || res.Plans[1].PITR || len(res.Problems) != 0 {
		t.Errorf("with capsule.cnvrg.io/pitr-pg: %+v, problems %v", res.Plans, res.Problems)
	}
	raw, err := s3.New(context.Background(), s3.Options{
		Bucket: f.bucketName, Endpoint: f.srv.Endpoint, Region: f.srv.Region, AccessKey: f.srv.AccessKey, SecretKey: f.srv.SecretKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	page, err := raw.List(context.Background(), "", bucket.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Objects) != 0 {
		t.Errorf("scan --once wrote to the bucket: %v", page.Objects)
	}
}

// TestCRDFixtureInSync keeps the repository's copy of the shipped CRD equal
// to the shared fixture, when that is around.
func TestCRDFixtureInSync(t *testing.T) {
	shared, err := os.ReadFile("../../shared/fixtures/cnvrgapp-crd.yaml")
	if os.IsNotExist(err) {
		t.Skip("../shared/fixtures is not here")
	}
	if err != nil {
		t.Fatal(err)
	}
	ours, err := os.ReadFile("testdata/cnvrgapp-crd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(shared, ours) {
		t.Error("scanner/testdata/cnvrgapp-crd.yaml differs from ../shared/fixtures/cnvrgapp-crd.yaml: copy it over")
	}
}

// TestWorkerScanProcesses runs two "capsule worker --scan" processes (no
// --bucket: they serve the bucket the CnvrgApp names) and checks that they
// make one successful backup per slot between them, then stop on SIGTERM.
func TestWorkerScanProcesses(t *testing.T) {
	f := newFixture(t)
	bin := f.k.binary(t)
	pgPlan := f.ns + "/cnvrg-app/pg"
	f.app("cnvrg-app", func(u *unstructured.Unstructured) {
		set(t, u, "2s", "spec", "dbs", "pg", "backup", "period")
		set(t, u, int64(2), "spec", "dbs", "pg", "backup", "rotation")
		set(t, u, false, "spec", "dbs", "redis", "backup", "enabled")
	})
	type proc struct {
		cmd    *exec.Cmd
		stderr *bytes.Buffer
		exited chan error
	}
	var procs []*proc
	for _, name := range []string{"worker-1", "worker-2"} {
		cmd := exec.Command(bin, "worker", "--scan", "--kubeconfig", f.k.conf, "--namespaces", f.ns, "--service-host", "127.0.0.1",
			"--name", name, "--poll", "200ms", "--lease", "3s", "--scan-tick", "500ms", "--log-format", "text")
		cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+t.TempDir())
		p := &proc{cmd: cmd, stderr: &bytes.Buffer{}, exited: make(chan error, 1)}
		cmd.Stderr = p.stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { p.exited <- cmd.Wait() }()
		procs = append(procs, p)
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			select {
			case <-p.exited:
			case <-time.After(10 * time.Second):
			}
			if t.Failed() {
				t.Logf("%s:\n%s", name, p.stderr.String())
			}
		})
	}
	// The processes are outside the test: read their progress from the
	// bucket, as a user would.
	var done []string
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(90 * time.Second)
	for len(done) < 3 {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("only %d successful backups of %s: %v", len(done), pgPlan, done)
		}
		done = done[:0]
		err := bucket.Walk(context.Background(), f.bucket, requests.ResultsPrefix, func(o bucket.ObjectInfo) error {
			data, _, err := bucket.GetBytes(context.Background(), f.bucket, o.Key)
			if err != nil {
				return err
			}
			var r requests.Result
			if err := json.Unmarshal(data, &r); err != nil {
				return err
			}
			if r.Status != requests.StatusSucceeded || r.RequestKind != requests.KindBackup {
				t.Errorf("result %s: %s %s %s", r.ID, r.RequestKind, r.Status, r.Error)
			}
			done = append(done, r.ID)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range procs {
		if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range procs {
		select {
		case err := <-p.exited:
			if err != nil {
				t.Errorf("worker %d exited: %v", i+1, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("worker %d did not stop on SIGINT", i+1)
		}
	}
	slices.Sort(done)
	for i := 1; i < len(done); i++ {
		if d := slotOf(t, done[i]).Sub(slotOf(t, done[i-1])); d != 2*time.Second {
			t.Errorf("results %s and %s: slots %s apart, want 2s", done[i-1], done[i], d)
		}
	}
	if got := planBackups(t, f.bucket, f.ns+"/cnvrg-app", pgPlan); len(got) > 3 {
		t.Errorf("%d backups of %s left with rotation 2: %v", len(got), pgPlan, got)
	}
}
