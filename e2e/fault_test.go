package e2e

// The fault suite (issue #13): the real worker binary behind a fault proxy
// (internal/faultproxy) in front of versitygw, with workers SIGKILLed and
// SIGSTOPped during the run. By default it runs a short version (100
// requests at 5 % faults, 30 at 20 %, one kill and one pause each);
// CAPSULE_FAULT_LONG=1 runs the long one. CAPSULE_FAULT_SEED replays the
// proxies' decisions of a failed run.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/faultproxy"
	"github.com/cnvrg/capsule/requests"
)

// mixPlan is one run of TestFaultMix.
type mixPlan struct {
	name        string
	rate        float64
	files, big  int // backups of the small files sources and of the 17 MiB one
	pg          int // backups of the PostgreSQL source
	stops       int // workers paused past their lease
	kills       int // workers SIGKILLed (and replaced)
	timeout     time.Duration
	maxInFlight int // backups submitted but not ended
}

func mixPlans() []mixPlan {
	if faultLong() {
		return []mixPlan{
			{name: "r5", rate: 0.05, files: 76, big: 4, pg: 20, stops: 3, kills: 3, timeout: 15 * time.Minute, maxInFlight: 10},
			{name: "r20", rate: 0.20, files: 76, big: 4, pg: 20, stops: 3, kills: 3, timeout: 20 * time.Minute, maxInFlight: 10},
		}
	}
	return []mixPlan{
		{name: "r5", rate: 0.05, files: 39, big: 1, pg: 10, stops: 1, kills: 1, timeout: 5 * time.Minute, maxInFlight: 8},
		{name: "r20", rate: 0.20, files: 12, pg: 3, stops: 1, kills: 1, timeout: 4 * time.Minute, maxInFlight: 6},
	}
}

// TestFaultMix runs backups and restores of files and PostgreSQL sources
// through three workers whose every bucket call passes a fault proxy
// (every kind of fault, at 5 % and at 20 %), while workers are paused past
// their lease and killed. Every request must end exactly once and
// succeed, every backup must restore byte for byte (files: the tree;
// PostgreSQL: every table's rows), and once garbage collection has run
// no staging directory, side database, attempt folder of a lost attempt,
// open upload, request or lease may be left.
func TestFaultMix(t *testing.T) {
	pg := needPostgres(t)
	for _, m := range mixPlans() {
		t.Run(m.name, func(t *testing.T) { runMix(t, pg, m) })
	}
}

// mixReq is a request of the mix, as the test submitted it.
type mixReq struct {
	kind     requests.Kind
	source   string // backup: the source; restore: the backup's source
	target   string // restore: the target source
	backupID string
}

func runMix(t *testing.T, pg *pgServer, m mixPlan) {
	start := time.Now()
	seed := faultSeed(t, 13)
	c := newCluster(t, 1024)
	p := faultproxy.Start(t, c.srv.Endpoint, seed)
	root := c.dir

	// Sources: four small trees, a 17 MiB one (a multipart upload),
	// a PostgreSQL database; one restore target per backup.
	paths := map[string]string{}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "cluster: e2e\nworker:\n  poll: 200ms\n  lease: 5s\n  grace: 2s\nsources:\n")
	for i := range 4 {
		name := fmt.Sprintf("f%d", i)
		paths[name] = filepath.Join(root, "src", name)
		makeTree(t, paths[name], (40+i*8)<<10)
		fmt.Fprintf(&cfg, "  %s:\n    engine: files\n    path: %s\n", name, paths[name])
	}
	if m.big > 0 {
		paths["big"] = filepath.Join(root, "src", "big")
		makeTree(t, paths["big"], 17<<20)
		fmt.Fprintf(&cfg, "  big:\n    engine: files\n    path: %s\n", paths["big"])
	}
	pgStaging := filepath.Join(root, "pgstaging")
	mustDo(t, os.MkdirAll(pgStaging, 0o700))
	dbPrefix := pg.prefix + "_" + m.name + "_"
	srcDB := dbPrefix + "src"
	pg.createSource(srcDB, 3000)
	fmt.Fprintf(&cfg, "  pg:\n    engine: postgres\n    url: %s\n    stagingDir: %s\n", pg.url(srcDB), pgStaging)
	restoreDir := filepath.Join(root, "restore")
	for i := range m.files + m.big {
		fmt.Fprintf(&cfg, "  ft%d:\n    engine: files\n    path: %s\n", i, filepath.Join(restoreDir, fmt.Sprintf("ft%d", i)))
	}
	for i := range m.pg {
		fmt.Fprintf(&cfg, "  pt%d:\n    engine: postgres\n    url: %s\n    stagingDir: %s\n", i, pg.url(fmt.Sprintf("%st%d", dbPrefix, i)), pgStaging)
	}
	mustDo(t, os.WriteFile(c.config, []byte(cfg.String()), 0o600))

	p.SetRules(faultproxy.Rule{Rate: m.rate, Delay: 300 * time.Millisecond})
	via := c.urlVia(p)
	live := []*workerProc{}
	for i := range 3 {
		live = append(live, c.startWorkerVia(fmt.Sprintf("w%d", i+1), via))
	}
	nextWorker := 4

	// The backups: the small trees in turn, with PostgreSQL and the big
	// tree spread evenly among them.
	total := m.files + m.big + m.pg
	var specials []string
	for i := range m.pg + m.big {
		if i < m.pg {
			specials = append(specials, "pg")
		} else {
			specials = append(specials, "big")
		}
	}
	every := max(1, total/max(1, len(specials)))
	var plan []string
	for i, small := 0, 0; len(plan) < total; i++ {
		if len(specials) > 0 && (i%every == 0 || small == m.files) {
			plan, specials = append(plan, specials[0]), specials[1:]
		} else {
			plan = append(plan, fmt.Sprintf("f%d", small%4))
			small++
		}
	}

	ctx := context.Background()
	reqs := map[string]*mixReq{}
	results := map[string]*requests.Result{}
	submit := func(r *requests.Request, info *mixReq) {
		r.Cluster = "e2e"
		if err := client.Submit(ctx, c.b, r); err != nil {
			t.Fatalf("submit: %v", err)
		}
		reqs[r.ID] = info
	}
	nextFT, nextPT := 0, 0
	inFlight := func() int {
		n := 0
		for id, r := range reqs {
			if r.kind == requests.KindBackup && results[id] == nil {
				n++
			}
		}
		return n
	}

	// Chaos: pauses and kills spread over the run, each when a given
	// share of the expected requests has ended.
	type chaos struct {
		at   float64
		kill bool
	}
	var events []chaos
	for i := range m.stops {
		events = append(events, chaos{at: float64(2*i+1) / float64(2*(m.stops+m.kills)+1)})
	}
	for i := range m.kills {
		events = append(events, chaos{at: float64(2*(m.stops+i)+2) / float64(2*(m.stops+m.kills)+1), kill: true})
	}
	sort.Slice(events, func(i, j int) bool { return events[i].at < events[j].at })
	killed := map[string]bool{}
	stopsDone, killsDone := 0, 0
	// victim picks a live worker that holds a lease now.
	victim := func() (*workerProc, string) {
		for id, l := range c.leases() {
			for _, w := range live {
				if l.Holder == w.name && results[id] == nil {
					return w, id
				}
			}
		}
		return nil, ""
	}

	expected := 2 * total
	deadline := time.Now().Add(m.timeout)
	for {
		for len(plan) > 0 && inFlight() < m.maxInFlight {
			src := plan[0]
			plan = plan[1:]
			submit(&requests.Request{Kind: requests.KindBackup, Source: src}, &mixReq{kind: requests.KindBackup, source: src})
		}
		// New results.
		err := bucket.Walk(ctx, c.b, requests.ResultsPrefix, func(o bucket.ObjectInfo) error {
			id, ok := requests.IDFromKey(requests.ResultsPrefix, o.Key)
			if !ok || reqs[id] == nil || results[id] != nil {
				return nil
			}
			r := c.result(id)
			if r == nil {
				return nil
			}
			results[id] = r
			info := reqs[id]
			if info.kind == requests.KindBackup && r.Status == requests.StatusSucceeded {
				rq := &requests.Request{Kind: requests.KindRestore, BackupID: id, DropPrevious: true}
				ri := &mixReq{kind: requests.KindRestore, source: info.source, backupID: id}
				if info.source == "pg" {
					rq.Target = fmt.Sprintf("pt%d", nextPT)
					nextPT++
				} else {
					rq.Target = fmt.Sprintf("ft%d", nextFT)
					nextFT++
				}
				ri.target = rq.Target
				submit(rq, ri)
			}
			if info.kind == requests.KindBackup && r.Status != requests.StatusSucceeded {
				expected-- // no restore follows
			}
			return nil
		})
		if err != nil {
			t.Fatalf("list results: %v", err)
		}
		if len(results) == expected && len(plan) == 0 {
			break
		}
		if time.Now().After(deadline) {
			var open []string
			ls := c.leases()
			for id, r := range reqs {
				if results[id] == nil {
					open = append(open, fmt.Sprintf("%s %s %s (lease: %s attempt %d)", id, r.kind, r.source, ls[id].Holder, ls[id].Attempt))
				}
			}
			sort.Strings(open)
			t.Fatalf("%s: %d of %d requests ended; open:\n%s\nproxy: %s", m.timeout, len(results), expected, strings.Join(open, "\n"), p.Stats())
		}
		if len(events) > 0 && float64(len(results)) >= events[0].at*float64(2*total) {
			if w, id := victim(); w != nil {
				ev := events[0]
				events = events[1:]
				if ev.kill {
					signalGroup(t, w, syscall.SIGKILL)
					<-w.done
					killed[w.name] = true
					live = remove(live, w)
					nw := c.startWorkerVia(fmt.Sprintf("w%d", nextWorker), via)
					nextWorker++
					live = append(live, nw)
					killsDone++
					t.Logf("%s: SIGKILLed %s while it held %s; started %s", time.Since(start).Round(time.Millisecond), w.name, id, nw.name)
				} else {
					signalGroup(t, w, syscall.SIGSTOP)
					paused := time.Now()
					// Past the lease: until another worker took the request over.
					waitFor(t, time.Minute, "a takeover of "+id+" from paused "+w.name, func() bool {
						l, ok := c.leases()[id]
						return (ok && l.Holder != w.name) || c.result(id) != nil
					})
					signalGroup(t, w, syscall.SIGCONT)
					stopsDone++
					t.Logf("%s: SIGSTOPped %s for %s while it held %s, until another worker took it over", time.Since(start).Round(time.Millisecond), w.name, time.Since(paused).Round(time.Millisecond), id)
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	stats := p.Stats()
	t.Logf("%d requests ended in %s; proxy (rate %.0f %%): %d faults: %s", len(results), time.Since(start).Round(time.Second), m.rate*100, stats.Total(), stats)
	if stopsDone < m.stops || killsDone < m.kills {
		t.Errorf("only %d of %d pauses and %d of %d kills happened: no worker held a lease at their time", stopsDone, m.stops, killsDone, m.kills)
	}
	// From here on the bucket is reliable: what is left to clean up, a
	// fault must not keep.
	p.Off()

	// Every request ended once and succeeded.
	byStatus := map[string]int{}
	for id, r := range results {
		info := reqs[id]
		byStatus[fmt.Sprintf("%s %s", info.kind, r.Status)]++
		if r.Status != requests.StatusSucceeded {
			t.Errorf("%s %s (%s%s) ended %s after %d attempt(s): %s", info.kind, id, info.source, arrow(info.target), r.Status, r.Attempts, r.Error)
		}
	}
	t.Logf("results: %v", byStatus)
	c.checkExactlyOnce(results, killed)

	// Every backup's index and artifacts; every restore's content.
	for id, info := range reqs {
		r := results[id]
		if r.Status != requests.StatusSucceeded {
			continue
		}
		switch info.kind {
		case requests.KindBackup:
			c.checkIndex(id, info.source)
		case requests.KindRestore:
			if info.source == "pg" {
				if got, want := pg.digest(dbPrefix+strings.TrimPrefix(info.target, "p")), pg.digest(srcDB); got != want {
					t.Errorf("restore %s of backup %s into %s: the tables differ from the source's", id, info.backupID, info.target)
				}
			} else if got, want := treeDigest(t, filepath.Join(restoreDir, info.target)), treeDigest(t, paths[info.source]); got != want {
				t.Errorf("restore %s of backup %s into %s: the tree differs from %s", id, info.backupID, info.target, info.source)
			}
		}
	}

	// Garbage collection, then nothing may be left.
	rep := c.collectGarbage()
	t.Logf("garbage collection removed %d folders (%d objects), aborted %d uploads", len(rep.Removed), rep.Objects, len(rep.Aborted))
	c.checkAttemptFolders(reqs, results)
	c.checkLeftovers(func() []string {
		left := stagingLeft(t, restoreDir)
		for _, db := range pg.databases("_capsule_") {
			if strings.HasPrefix(db, dbPrefix) {
				left = append(left, "database "+db)
			}
		}
		for _, e := range dirEntries(pgStaging) {
			left = append(left, filepath.Join(pgStaging, e))
		}
		return left
	})

	// The faults were hit, and the workers saw them.
	if stats.Total() == 0 {
		t.Errorf("the proxy injected no fault: the run proved nothing")
	}
	retries := 0
	warnings := map[string]int{}
	for _, w := range c.workers {
		for _, l := range logLines(t, w) {
			if l.str("level") != "warning" {
				continue
			}
			warnings[l.str("msg")]++
			if msg := l.str("msg"); strings.HasPrefix(msg, "commit failed") || strings.HasPrefix(msg, "writing the result failed") ||
				strings.HasPrefix(msg, "final renewal failed") || strings.HasPrefix(msg, "could not hand the lease back") {
				t.Logf("%s: %s: %s (request %s)", w.name, msg, l.str("error"), l.str("request_id"))
			}
			if strings.Contains(l.str("msg"), "retrying") || strings.Contains(l.str("msg"), "failed") {
				retries++
			}
		}
	}
	t.Logf("the workers logged %d retries and failed calls; their warnings: %v", retries, warnings)
	if stats.Total() > 0 && retries == 0 {
		t.Errorf("the proxy injected %d faults but no worker logged a retry or a failed call", stats.Total())
	}
	t.Logf("run took %s", time.Since(start).Round(time.Second))
}

func remove(ws []*workerProc, w *workerProc) []*workerProc {
	out := ws[:0:0]
	for _, x := range ws {
		if x != w {
			out = append(out, x)
		}
	}
	return out
}

func arrow(target string) string {
	if target == "" {
		return ""
	}
	return " → " + target
}

// checkIndex checks a succeeded backup's index: where it is, what it
// names, and every artifact's size and sha256.
func (c *cluster) checkIndex(id, source string) {
	c.t.Helper()
	ctx := context.Background()
	x, err := index.Read(ctx, c.b, requests.IndexKey("e2e", source, id))
	if err != nil {
		c.t.Errorf("backup %s succeeded but its index: %v", id, err)
		return
	}
	if x.RequestID != id || x.BackupID != id || x.Attempt < 1 {
		c.t.Errorf("index of %s names request %s backup %s attempt %d", id, x.RequestID, x.BackupID, x.Attempt)
	}
	for _, a := range x.Artifacts {
		if !strings.Contains(a.Key, fmt.Sprintf("/%s/%d/", id, x.Attempt)) {
			c.t.Errorf("index of %s (attempt %d) names artifact %s of another attempt", id, x.Attempt, a.Key)
		}
		data, _, err := bucket.GetBytes(ctx, c.b, a.Key)
		if err != nil {
			c.t.Errorf("artifact %s: %v", a.Key, err)
			continue
		}
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != a.SHA256 || int64(len(data)) != a.StoredSize {
			c.t.Errorf("artifact %s: sha256/size do not match the index", a.Key)
		}
	}
}

// checkAttemptFolders checks, after garbage collection, that each backup
// has exactly one attempt folder, the one its index names (none for a
// backup that failed), that no upload is open, and that no request or
// lease is left.
func (c *cluster) checkAttemptFolders(reqs map[string]*mixReq, results map[string]*requests.Result) {
	c.t.Helper()
	ctx := context.Background()
	for id, info := range reqs {
		if info.kind != requests.KindBackup {
			continue
		}
		dir := requests.BackupDir("e2e", info.source, id)
		attempts := map[string]bool{}
		mustDo(c.t, bucket.Walk(ctx, c.b, dir, func(o bucket.ObjectInfo) error {
			rest := strings.TrimPrefix(o.Key, dir)
			if a, _, ok := strings.Cut(rest, "/"); ok {
				attempts[a] = true
			}
			return nil
		}))
		want := map[string]bool{}
		if results[id].Status == requests.StatusSucceeded {
			if x, err := index.Read(ctx, c.b, requests.IndexKey("e2e", info.source, id)); err == nil {
				want[fmt.Sprint(x.Attempt)] = true
			}
		}
		if fmt.Sprint(attempts) != fmt.Sprint(want) {
			c.t.Errorf("backup %s: attempt folders %v after garbage collection, want %v", id, keys(attempts), keys(want))
		}
	}
	if ul, ok := c.b.(bucket.UploadLister); ok {
		ups, err := ul.ListUploads(ctx, "")
		mustDo(c.t, err)
		for _, u := range ups {
			c.t.Errorf("upload of %s left open after garbage collection", u.Key)
		}
	}
	c.checkLeftovers(func() []string {
		var left []string
		for _, prefix := range []string{requests.RequestsPrefix, requests.LeasesPrefix} {
			_ = bucket.Walk(ctx, c.b, prefix, func(o bucket.ObjectInfo) error {
				left = append(left, o.Key)
				return nil
			})
		}
		return left
	})
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// checkLeftovers waits (a bounded time: a zombie may still be cleaning
// up) for left to list nothing, and reports what stays.
func (c *cluster) checkLeftovers(left func() []string) {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	l := left()
	for len(l) > 0 && time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond)
		l = left()
	}
	for _, x := range l {
		c.t.Errorf("left behind after garbage collection: %s", x)
	}
}

// zombieCase is one staging engine's part of TestFaultZombieRestore.
type zombieCase struct {
	// sources is the config's sources: a source "orig" to back up and a
	// target "copy" that does not exist yet.
	sources string
	// staged lists the staging (directories, side databases) present.
	staged func() []string
	// exists says whether the target exists (it does not before the
	// restore swaps it in).
	exists func() bool
	// same compares the restored target with the original.
	same func() bool
}

// TestFaultZombieRestore: worker A runs a restore and is SIGSTOPped once
// its staging exists (its artifact read held at the proxy); worker B
// takes the request over when the lease expires and starts staging (its
// artifact read held too); then A resumes.
//
//   - cleanup: A's next renewal finds the lease lost and A stops, cleaning
//     up after itself. It must touch nothing of B's staging.
//   - swap: A's lease writes are held at the proxy (its renewals are slow,
//     as on a bad network) and its artifact read is let go, so A runs its
//     restore to the end while B holds the lease. A must not swap anything
//     into the target: it renews its lease right before the swap, and that
//     renewal fails.
//
// Either way B's restore then succeeds, the target equals the backup,
// only B finished the request, and nothing of either attempt's staging
// is left once garbage collection has run.
func TestFaultZombieRestore(t *testing.T) {
	modes := func(t *testing.T, zc func(t *testing.T) zombieCase) {
		for _, swap := range []bool{false, true} {
			name := "cleanup"
			if swap {
				name = "swap"
			}
			t.Run(name, func(t *testing.T) { runZombie(t, zc(t), swap) })
		}
	}
	t.Run("files", func(t *testing.T) {
		modes(t, func(t *testing.T) zombieCase {
			dir := t.TempDir()
			orig, restoreDir := filepath.Join(dir, "orig"), filepath.Join(dir, "restore")
			target := filepath.Join(restoreDir, "copy")
			makeTree(t, orig, 256<<10)
			return zombieCase{
				sources: fmt.Sprintf("  orig:\n    engine: files\n    path: %s\n  copy:\n    engine: files\n    path: %s\n", orig, target),
				staged:  func() []string { return stagingLeft(t, restoreDir) },
				exists: func() bool {
					_, err := os.Lstat(target)
					return err == nil
				},
				same: func() bool { return treeDigest(t, orig) == treeDigest(t, target) },
			}
		})
	})
	t.Run("postgres", func(t *testing.T) {
		pg := needPostgres(t)
		modes(t, func(t *testing.T) zombieCase {
			stem := pg.prefix + "_" + randHex(2)
			src, dst := stem+"_orig", stem+"_copy"
			pg.createSource(src, 2000)
			staging := filepath.Join(t.TempDir(), "pgstaging")
			mustDo(t, os.MkdirAll(staging, 0o700))
			return zombieCase{
				// restoreJobs 1: the side database exists while the
				// artifact streams from the bucket.
				sources: fmt.Sprintf("  orig:\n    engine: postgres\n    url: %s\n  copy:\n    engine: postgres\n    url: %s\n    restoreJobs: 1\n    stagingDir: %s\n", pg.url(src), pg.url(dst), staging),
				staged: func() []string {
					var left []string
					// Side databases keep the start of the target's name
					// (cut to fit PostgreSQL's 63 bytes with the request id
					// and attempt): only this case's restores make them.
					for _, db := range pg.databases("_capsule_") {
						if strings.HasPrefix(db, stem) {
							left = append(left, db)
						}
					}
					return append(left, dirEntries(staging)...)
				},
				exists: func() bool { return slices.Contains(pg.databases(dst), dst) },
				same:   func() bool { return pg.digest(dst) == pg.digest(src) },
			}
		})
	})
	t.Run("mysql", func(t *testing.T) {
		my := needMariaDB(t)
		modes(t, func(t *testing.T) zombieCase {
			src, dst := my.prefix+"_"+randHex(2)+"_orig", my.prefix+"_"+randHex(2)+"_copy"
			my.exec("CREATE DATABASE `" + src + "`")
			my.exec("CREATE TABLE `" + src + "`.items(id int PRIMARY KEY, name varchar(64) NOT NULL, amount decimal(12,2))")
			my.exec("INSERT INTO `" + src + "`.items SELECT seq, MD5(RAND()), ROUND(RAND()*10000, 2) FROM `" + src + "`.seq_1_to_5000")
			return zombieCase{
				sources: fmt.Sprintf("  orig:\n    engine: mysql\n    url: mysql://root@127.0.0.1:3306/%s\n  copy:\n    engine: mysql\n    url: mysql://root@127.0.0.1:3306/%s\n", src, dst),
				staged: func() []string {
					var left []string
					for _, s := range my.schemas("_capsule_") {
						if strings.HasPrefix(s, dst) {
							left = append(left, s)
						}
					}
					return left
				},
				exists: func() bool { return slices.Contains(my.schemas(dst), dst) },
				same:   func() bool { return my.digest(dst) == my.digest(src) },
			}
		})
	})
}

func runZombie(t *testing.T, zc zombieCase, swap bool) {
	start := time.Now()
	at := func() string { return time.Since(start).Round(time.Millisecond).String() }
	c := newCluster(t, 1024)
	pa := faultproxy.Start(t, c.srv.Endpoint, 1)
	pb := faultproxy.Start(t, c.srv.Endpoint, 2)
	cfg := "cluster: e2e\nworker:\n  poll: 200ms\n  lease: 3s\n  grace: 2s\nsources:\n" + zc.sources
	mustDo(t, os.WriteFile(c.config, []byte(cfg), 0o600))
	ctx := context.Background()
	artifactGets := faultproxy.Filter{Ops: []faultproxy.Op{faultproxy.GetObject}, Keys: faultproxy.Artifacts}

	a := c.startWorkerVia("A", c.urlVia(pa))
	backup := &requests.Request{Kind: requests.KindBackup, Cluster: "e2e", Source: "orig"}
	mustDo(t, client.Submit(ctx, c.b, backup))
	waitFor(t, 2*time.Minute, "the backup", func() bool { return c.result(backup.ID) != nil })
	if r := c.result(backup.ID); r.Status != requests.StatusSucceeded {
		t.Fatalf("backup: %s: %s", r.Status, r.Error)
	}

	// A starts the restore and stops at its artifact read, staging begun.
	holdA := pa.Hold(artifactGets)
	restore := &requests.Request{Kind: requests.KindRestore, Cluster: "e2e", BackupID: backup.ID, Target: "copy"}
	mustDo(t, client.Submit(ctx, c.b, restore))
	waitChan(t, holdA.Held(), time.Minute, "worker A to read the artifact")
	waitFor(t, 30*time.Second, "worker A's staging", func() bool { return len(zc.staged()) > 0 })
	signalGroup(t, a, syscall.SIGSTOP)
	t.Logf("%s: A paused with staging %v", at(), zc.staged())

	// B takes over once the lease expired, and stops at its artifact read.
	holdB := pb.Hold(artifactGets)
	c.startWorkerVia("B", c.urlVia(pb))
	waitChan(t, holdB.Held(), time.Minute, "worker B to take the restore over and read the artifact")
	if l := c.leases()[restore.ID]; l.Holder != "B" || l.Attempt != 2 {
		t.Fatalf("lease of the restore: holder %q attempt %d, want B attempt 2", l.Holder, l.Attempt)
	}
	t.Logf("%s: B took over as attempt 2; staging now %v", at(), zc.staged())

	// A stops one of three ways: a renewal finds the lease lost; or,
	// when its failed attempt's final renewals cannot get through (its
	// lease writes held), it gives up writing anything and hands over;
	// or it finishes (which the checks below fail).
	aStopped := func() bool {
		return logged(t, a, restore.ID, "lease lost: writing nothing more") ||
			logged(t, a, restore.ID, "lease lost before commit: writing nothing more") ||
			logged(t, a, restore.ID, "could not finish: handing the request to the next attempt") ||
			logged(t, a, restore.ID, "request finished")
	}
	if swap {
		// A resumes with its lease writes held and its artifact read let
		// go: it restores to the end while B holds the lease. Give it
		// twice the lease to swap (it must not), then let its lease
		// writes through.
		holdLease := pa.Hold(faultproxy.Filter{Ops: []faultproxy.Op{faultproxy.ConditionalPut}, Keys: faultproxy.Under("leases/")})
		signalGroup(t, a, syscall.SIGCONT)
		holdA.Release()
		deadline := time.Now().Add(6 * time.Second)
		for !zc.exists() && !aStopped() && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if zc.exists() {
			t.Errorf("the zombie A swapped its restore into the target while B held the lease (A's lease writes held: %d)", holdLease.Count())
		}
		holdLease.Release()
	} else {
		// A resumes: its next renewal finds the lease lost, and it stops.
		signalGroup(t, a, syscall.SIGCONT)
	}
	waitFor(t, 30*time.Second, "worker A to stop after losing its lease", aStopped)
	t.Logf("%s: A stopped; staging now %v", at(), zc.staged())
	if zc.exists() {
		t.Errorf("the target exists before B, the lease's holder, swapped it in")
	}
	holdA.Release()
	holdB.Release()

	waitFor(t, 2*time.Minute, "the restore's result", func() bool { return c.result(restore.ID) != nil })
	r := c.result(restore.ID)
	t.Logf("%s: restore ended %s after %d attempt(s) on %s: %s", at(), r.Status, r.Attempts, r.Worker, r.Error)
	if r.Status != requests.StatusSucceeded || r.Worker != "B" || r.Attempts != 2 {
		t.Errorf("restore: %s by %s after %d attempt(s) (%s), want succeeded by B after 2", r.Status, r.Worker, r.Attempts, r.Error)
	}
	if !zc.exists() || !zc.same() {
		t.Errorf("the target differs from the backed-up source")
	}
	if logged(t, a, restore.ID, "request finished") {
		t.Errorf("the zombie A finished the restore")
	}
	c.checkExactlyOnce(map[string]*requests.Result{restore.ID: r}, nil)
	c.collectGarbage()
	c.checkLeftovers(zc.staged)
	t.Logf("took %s", at())
}

func waitChan(t *testing.T, ch <-chan struct{}, timeout time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(timeout):
		t.Fatalf("waited %s for %s", timeout, what)
	}
}

// cliVia runs the capsule CLI with bucketURL as its bucket, returning its
// stdout, stderr and exit code.
func (c *cluster) cliVia(bucketURL string, args ...string) (string, string, int) {
	c.t.Helper()
	cmd := exec.Command(binary, append([]string{"--config", c.config}, args...)...)
	cmd.Env = append(append([]string{}, c.env...), "CAPSULE_BUCKET="+bucketURL)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	case err != nil:
		c.t.Fatal(err)
	}
	return out.String(), errb.String(), 0
}

// TestFaultWaitThroughFaults: `capsule backup --wait` and `capsule
// restore --wait` talk to the bucket through a proxy that faults 20 % of
// their calls (every kind), while the workers' path is clean. Each must
// exit 0 and print the succeeded result, and the restores must be exact.
func TestFaultWaitThroughFaults(t *testing.T) {
	start := time.Now()
	rounds := 3
	if faultLong() {
		rounds = 10
	}
	c := newCluster(t, 1024)
	workers := faultproxy.Start(t, c.srv.Endpoint, 1)
	cli := faultproxy.Start(t, c.srv.Endpoint, faultSeed(t, 20))
	orig := filepath.Join(c.dir, "orig")
	makeTree(t, orig, 128<<10)
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "cluster: e2e\nworker:\n  poll: 200ms\n  lease: 3s\n  grace: 2s\nsources:\n  orig:\n    engine: files\n    path: %s\n", orig)
	for i := range rounds {
		fmt.Fprintf(&cfg, "  t%d:\n    engine: files\n    path: %s\n", i, filepath.Join(c.dir, "restore", fmt.Sprintf("t%d", i)))
	}
	mustDo(t, os.WriteFile(c.config, []byte(cfg.String()), 0o600))
	c.startWorkerVia("w1", c.urlVia(workers))
	c.startWorkerVia("w2", c.urlVia(workers))
	cli.SetRules(faultproxy.Rule{Rate: 0.2, Delay: 300 * time.Millisecond})

	failures, commands := 0, 0
	run := func(args ...string) *client.Status {
		t.Helper()
		commands++
		out, errOut, code := c.cliVia(c.urlVia(cli), args...)
		var st client.Status
		if code != 0 {
			failures++
			t.Errorf("capsule %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, tail([]byte(errOut), 2000))
			return nil
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil || st.Status != requests.StatusSucceeded || st.Result == nil {
			t.Errorf("capsule %s printed %q (%v), want the succeeded result as JSON", strings.Join(args, " "), out, err)
			return nil
		}
		return &st
	}
	for i := range rounds {
		st := run("backup", "orig", "--wait", "-o", "json")
		if st == nil {
			continue
		}
		target := fmt.Sprintf("t%d", i)
		if run("restore", st.ID, "--to", target, "--wait", "-o", "json") == nil {
			continue
		}
		if treeDigest(t, orig) != treeDigest(t, filepath.Join(c.dir, "restore", target)) {
			t.Errorf("restore of %s into %s differs from the original", st.ID, target)
		}
	}
	stats := cli.Stats()
	t.Logf("%d of %d commands failed; the CLI's proxy injected %d faults: %s", failures, commands, stats.Total(), stats)
	for _, f := range cli.Faults() {
		t.Logf("fault: %s %s %s %s", f.Op, f.Kind, f.Key, f.Detail)
	}
	if stats.Total() == 0 {
		t.Errorf("no fault hit the CLI: the test proved nothing (try another CAPSULE_FAULT_SEED)")
	}
	t.Logf("took %s", time.Since(start).Round(time.Millisecond))
}

// TestFaultCutArtifactReads: ten restores while 20 % of the workers'
// artifact reads are cut part way through the body. Every restore must
// succeed and be exact.
func TestFaultCutArtifactReads(t *testing.T) {
	start := time.Now()
	const n = 10
	c := newCluster(t, 1024)
	p := faultproxy.Start(t, c.srv.Endpoint, faultSeed(t, 4))
	orig := filepath.Join(c.dir, "orig")
	makeTree(t, orig, 1<<20)
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "cluster: e2e\nworker:\n  poll: 200ms\n  lease: 3s\n  grace: 2s\nsources:\n  orig:\n    engine: files\n    path: %s\n", orig)
	for i := range n {
		fmt.Fprintf(&cfg, "  t%d:\n    engine: files\n    path: %s\n", i, filepath.Join(c.dir, "restore", fmt.Sprintf("t%d", i)))
	}
	mustDo(t, os.WriteFile(c.config, []byte(cfg.String()), 0o600))
	for i := range 3 {
		c.startWorkerVia(fmt.Sprintf("w%d", i+1), c.urlVia(p))
	}
	ctx := context.Background()
	backup := &requests.Request{Kind: requests.KindBackup, Cluster: "e2e", Source: "orig"}
	mustDo(t, client.Submit(ctx, c.b, backup))
	waitFor(t, time.Minute, "the backup", func() bool { return c.result(backup.ID) != nil })
	if r := c.result(backup.ID); r.Status != requests.StatusSucceeded {
		t.Fatalf("backup: %s: %s", r.Status, r.Error)
	}

	p.SetRules(faultproxy.Rule{Filter: faultproxy.Filter{Ops: []faultproxy.Op{faultproxy.GetObject}, Keys: faultproxy.Artifacts}, Rate: 0.2, Kinds: []faultproxy.Kind{faultproxy.Cut}})
	ids := make([]string, n)
	for i := range ids {
		r := &requests.Request{Kind: requests.KindRestore, Cluster: "e2e", BackupID: backup.ID, Target: fmt.Sprintf("t%d", i)}
		mustDo(t, client.Submit(ctx, c.b, r))
		ids[i] = r.ID
	}
	waitFor(t, 3*time.Minute, "the restores' results", func() bool {
		for _, id := range ids {
			if c.result(id) == nil {
				return false
			}
		}
		return true
	})
	failed := 0
	for i, id := range ids {
		r := c.result(id)
		target := filepath.Join(c.dir, "restore", fmt.Sprintf("t%d", i))
		if r.Status != requests.StatusSucceeded {
			failed++
			t.Errorf("restore %s into t%d: %s after %d attempt(s): %s", id, i, r.Status, r.Attempts, r.Error)
			continue
		}
		if treeDigest(t, orig) != treeDigest(t, target) {
			t.Errorf("restore %s into t%d differs from the original", id, i)
		}
	}
	stats := p.Stats()
	t.Logf("%d of %d restores failed; %d of %d artifact reads cut", failed, n, stats.Of(faultproxy.Cut), stats.Matched[faultproxy.GetObject])
	for _, f := range p.Faults() {
		t.Logf("fault: %s %s %s %s", f.Op, f.Kind, f.Key, f.Detail)
	}
	if stats.Of(faultproxy.Cut) == 0 {
		t.Errorf("no artifact read was cut: the test proved nothing (try another CAPSULE_FAULT_SEED)")
	}
	t.Logf("took %s", time.Since(start).Round(time.Millisecond))
}
