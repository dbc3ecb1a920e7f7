// Command catalogbench measures what finding and listing backups costs at
// scale, in time and S3 requests, through the catalog and through the walk
// of every index that capsule used before it (the anchor, measured in the
// same run on the same bucket):
//
//	go run ./bench/catalogbench [-backups 10000] [-sources 4] [-new 20] [-sign]
//
// With -sign every index is signed (an ed25519 key made for the run), the
// catalog's snapshots are signed by the same key, and every reader trusts
// it: listings check each backup's signature, as a deployment with
// signatures.trustedKeys does.
//
// It starts a versitygw, writes -backups backups of one cluster the way
// capsule wrote them before the catalog (an artifact object and a
// backupIndex.json each), lets the first listing migrate the bucket (its
// cost is printed once), then commits -new more backups the way capsule
// does now (their catalog events wait for the next compaction, as in a
// bucket in use). Then it measures, each with a fresh reader (no cache):
//
//   - capsule ls: the listing `capsule ls` makes of the cluster;
//   - API first page: GET /v1/clusters/<cluster>/backups of a fresh API
//     server (50 backups);
//   - describe: index.Find of one id, as describe, restore and verify do;
//   - page load: what the web page asks of a fresh API server: GET
//     /v1/clusters, then the cluster's backups in pages of 500 up to 5,000.
//
// Time is wall time; CPU is this process's and the S3 server's CPU time
// (what the same work costs on an idle machine, whatever the load).
// Requests are counted by a wrapper around the bucket (one GET, HEAD, PUT,
// DELETE or LIST page each). Today's path is the same code with the
// catalog's objects hidden from it: the listing and describe fall back to
// the walk.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/cnvrg/capsule/api"
	"github.com/cnvrg/capsule/bench/internal/benchkit"
	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/reqcount"
	"github.com/cnvrg/capsule/requests"
)

const cluster = "cnvrg/app"

// With -sign: the workers' signing key, and the readers' trust of it
// (both nil without).
var (
	signer *index.Signer
	trust  *index.Trust
)

func main() {
	n := flag.Int("backups", 10000, "backups made before the catalog")
	sources := flag.Int("sources", 4, "sources the backups are spread over")
	fresh := flag.Int("new", 20, "backups committed after the migration (catalog events)")
	sign := flag.Bool("sign", false, "sign every index and snapshot, and check signatures in every listing")
	flag.Parse()
	if *sign {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err == nil {
			var key ssh.Signer
			if key, err = ssh.NewSignerFromKey(priv); err == nil {
				signer = index.NewSigner(key)
				trust = index.NewTrust([]ssh.PublicKey{key.PublicKey()}, false)
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "catalogbench: signing key:", err)
			os.Exit(1)
		}
	}
	if err := run(*n, *sources, *fresh); err != nil {
		fmt.Fprintln(os.Stderr, "catalogbench:", err)
		os.Exit(1)
	}
}

func run(n, sources, fresh int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "catalogbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := benchkit.StartS3(dir)
	if err != nil {
		return err
	}
	defer srv.Stop()
	server = srv
	_, raw, err := srv.NewBucket(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("machine: %s; load before: %s; signatures: %v\n", benchkit.Machine(), benchkit.LoadAvg(), signer != nil)
	t0 := time.Now().Add(-time.Duration(n+fresh) * time.Minute).UTC()
	start := time.Now()
	if err := parallel(n, func(i int) error {
		return writeOld(ctx, raw, backup(fmt.Sprintf("src%d", i%sources), fmt.Sprintf("b%06d", i), t0.Add(time.Duration(i)*time.Minute)))
	}); err != nil {
		return err
	}
	fmt.Printf("wrote %d backups (index and artifact each) the old way in %s\n", n, benchkit.Secs(time.Since(start)))

	counted := &reqcount.Bucket{B: raw}
	migration := measure(counted, func() error {
		_, err := index.Catalog{Bucket: counted, Writer: counted, Signer: signer}.List(ctx, index.Filter{Trust: trust})
		return err
	})
	for i := range fresh {
		x := backup("src0", fmt.Sprintf("c%06d", i), t0.Add(time.Duration(n+i)*time.Minute))
		if err := index.WriteSigned(ctx, raw, x, signer); err != nil {
			return err
		}
		if _, err := bucket.PutBytes(ctx, raw, x.Artifacts[0].Key, []byte("x"), bucket.PutOptions{}); err != nil {
			return err
		}
	}
	if migration.err != nil {
		return migration.err
	}
	fmt.Printf("first listing after the upgrade (walks once, writes snapshot and pointers): %s, %d requests\n\n", benchkit.Secs(migration.wall), migration.n.Total())

	// Today's path: the counter sees only the requests the walk makes.
	oldCount := &reqcount.Bucket{B: raw}
	oldB := hideCatalog{oldCount}
	newB := counted
	describeID := fmt.Sprintf("b%06d", n/2)
	type op struct {
		name string
		do   func(b bucket.Bucket) error
	}
	ops := []op{
		{"capsule ls (cluster)", func(b bucket.Bucket) error {
			l, err := index.Catalog{Bucket: b, Writer: b, Signer: signer}.List(ctx, index.Filter{Cluster: cluster, Trust: trust})
			if err == nil && len(l.Entries) != n+fresh {
				err = fmt.Errorf("listed %d backups, want %d", len(l.Entries), n+fresh)
			}
			for _, e := range l.Entries {
				if err == nil && !e.Trusted() {
					err = fmt.Errorf("backup %s is %s: %s", e.BackupID, e.Signature.State, e.Signature.Reason)
				}
			}
			return err
		}},
		{"API first page", func(b bucket.Bucket) error {
			return apiGets(b, "/v1/clusters/"+strings.ReplaceAll(cluster, "/", "%2F")+"/backups")
		}},
		{"describe <id>", func(b bucket.Bucket) error {
			e, err := index.FindTrusted(ctx, b, describeID, trust)
			if err == nil && e.BackupID != describeID {
				err = fmt.Errorf("found %s", e.BackupID)
			}
			return err
		}},
		{"page load", func(b bucket.Bucket) error { return pageLoad(b) }},
	}
	var failures []string
	t := benchkit.NewTable(fmt.Sprintf("%d backups", n+fresh), "catalog time", "CPU", "requests", "walk time", "CPU", "requests")
	for _, o := range ops {
		c := measure(newB, func() error { return o.do(newB) })
		if c.err != nil {
			return fmt.Errorf("%s through the catalog: %w", o.name, c.err)
		}
		w := measure(oldCount, func() error { return o.do(oldB) })
		walkTime := ms(w.wall)
		if w.err != nil {
			// Today's path can fail at this size (the API gives up on a
			// listing after 60 s): a result, not a reason to stop.
			walkTime = "failed after " + walkTime
			failures = append(failures, fmt.Sprintf("%s by the walk: %v", o.name, w.err))
		}
		t.Add(o.name, ms(c.wall), ms(c.cpu), fmt.Sprint(c.n.Total()), walkTime, ms(w.cpu), fmt.Sprint(w.n.Total()))
	}
	t.Print(os.Stdout)
	for _, f := range failures {
		fmt.Println("\n" + f)
	}
	fmt.Printf("\nload after: %s\n", benchkit.LoadAvg())
	return nil
}

func ms(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	}
	return benchkit.Secs(d)
}

type result struct {
	wall time.Duration
	// cpu is this process's CPU time and the S3 server's: on a shared
	// machine, the cost that does not depend on the load.
	cpu time.Duration
	n   reqcount.Counts
	err error
}

// server is the S3 server whose CPU time measure adds.
var server *benchkit.S3

func measure(b *reqcount.Bucket, f func() error) result {
	b.Reset()
	cpu0 := cpuTime()
	start := time.Now()
	err := f()
	return result{wall: time.Since(start), cpu: cpuTime() - cpu0, n: b.Counts(), err: err}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	d := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	if server != nil {
		if s, err := server.CPU(); err == nil {
			d += s
		}
	}
	return d
}

// apiGets asks a fresh API server (cold cache) for each path in turn.
func apiGets(b bucket.Bucket, paths ...string) error {
	h, err := api.New(api.Config{Bucket: b, Trust: trust})
	if err != nil {
		return err
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, p := range paths {
		if _, err := getJSON(srv.URL + p); err != nil {
			return err
		}
	}
	return nil
}

// pageLoad asks what the web page asks (api/ui/app.js): the clusters,
// then each cluster's backups, 500 a page, up to 5,000.
func pageLoad(b bucket.Bucket) error {
	h, err := api.New(api.Config{Bucket: b, Trust: trust})
	if err != nil {
		return err
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	var list api.ClusterList
	data, err := getJSON(srv.URL + "/v1/clusters")
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, &list); err != nil {
		return err
	}
	for _, c := range list.Clusters {
		cursor, got := "", 0
		for {
			u := srv.URL + "/v1/clusters/" + strings.ReplaceAll(c.Name, "/", "%2F") + "/backups?limit=500"
			if cursor != "" {
				u += "&cursor=" + cursor
			}
			data, err := getJSON(u)
			if err != nil {
				return err
			}
			var page api.BackupPage
			if err := json.Unmarshal(data, &page); err != nil {
				return err
			}
			got += len(page.Backups)
			if cursor = page.NextCursor; cursor == "" || got >= 5000 {
				break
			}
		}
	}
	return nil
}

func getJSON(url string) ([]byte, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s %s", url, resp.Status, data)
	}
	return data, err
}

func backup(source, id string, finished time.Time) *index.BackupIndex {
	return &index.BackupIndex{
		APIVersion: requests.APIVersion, Kind: index.KindIndex, BackupID: id, RequestID: id,
		Cluster: cluster, Source: source, Engine: "postgres", Format: "pg_dump/custom", ServerVersion: "15.8", ToolVersion: "15.8",
		CapsuleVersion: "bench", Status: requests.StatusSucceeded, Attempt: 1, Worker: "bench/1",
		StartedAt: finished.Add(-30 * time.Second), FinishedAt: finished, Bytes: 123456789, StoredBytes: 23456789,
		SourceInfo: map[string]string{"host": "pg.cnvrg.svc", "database": "cnvrg"},
		Artifacts: []index.Artifact{{Name: "dump.pgc", Key: requests.ArtifactKey(cluster, source, id, 1, "dump.pgc"),
			Size: 123456789, StoredSize: 23456789, SHA256: strings.Repeat("ab", 32), Compression: "zstd"}},
	}
}

// writeOld commits a backup as capsule did before the catalog: its
// artifact, then its index; no catalog objects.
func writeOld(ctx context.Context, b bucket.Bucket, x *index.BackupIndex) error {
	if _, err := bucket.PutBytes(ctx, b, x.Artifacts[0].Key, []byte("x"), bucket.PutOptions{}); err != nil {
		return err
	}
	data, _ := json.MarshalIndent(x, "", "  ")
	if _, err := bucket.PutBytes(ctx, b, x.Key(), data, bucket.PutOptions{IfNoneMatch: true, ContentType: "application/json"}); err != nil || signer == nil {
		return err
	}
	return index.SignStored(ctx, b, x.Key(), signer)
}

func parallel(n int, f func(i int) error) error {
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	next := make(chan int)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// hideCatalog is the bucket as capsule saw it before the catalog: its
// objects are not there, and writes to them go nowhere. It wraps the
// counter from outside, so that what it hides costs no request.
type hideCatalog struct{ bucket.Bucket }

func hidden(key string) bool { return strings.HasPrefix(key, requests.CatalogPrefix) }

func (h hideCatalog) Get(ctx context.Context, key string) (io.ReadCloser, bucket.ObjectInfo, error) {
	if hidden(key) {
		return nil, bucket.ObjectInfo{}, bucket.ErrNotFound
	}
	return h.Bucket.Get(ctx, key)
}

func (h hideCatalog) Head(ctx context.Context, key string) (bucket.ObjectInfo, error) {
	if hidden(key) {
		return bucket.ObjectInfo{}, bucket.ErrNotFound
	}
	return h.Bucket.Head(ctx, key)
}

func (h hideCatalog) List(ctx context.Context, prefix string, opts bucket.ListOptions) (bucket.ListPage, error) {
	if hidden(prefix) {
		return bucket.ListPage{}, nil
	}
	return h.Bucket.List(ctx, prefix, opts)
}

func (h hideCatalog) Put(ctx context.Context, key string, body io.Reader, size int64, opts bucket.PutOptions) (bucket.ObjectInfo, error) {
	if hidden(key) {
		return bucket.ObjectInfo{}, errors.New("the catalog is hidden")
	}
	return h.Bucket.Put(ctx, key, body, size, opts)
}
