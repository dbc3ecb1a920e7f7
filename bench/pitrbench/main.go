// Command pitrbench measures capsule's WAL stream against pg_receivewal
// on the same load, in one run:
//
//	go run ./bench/pitrbench [-duration 3m] [-scale 10] [-clients 2]
//
// It starts a private PostgreSQL 15 on scratch space (initdb, a free
// loopback port, wal_level replica), fills it with pgbench -i, starts a
// versitygw and builds ./cmd/capsule. Then, for capsule and then for
// pg_receivewal, it runs pgbench -c N -T duration against the server and
// inserts a marker row with the clock time every 100 ms.
//
// Capsule: a real `capsule worker` process streams the source (pitr:
// true) into the bucket. Every 500 ms the benchmark reads the newest WAL
// object's header: the server's clock when it sent the object's last
// byte. The newest recoverable marker is the newest whose commit had
// returned by then; the gap is the time between it and the newest
// committed marker at the sample. pg_receivewal writes into a local
// directory through its own slot; it has no notion of a bucket, so it
// gets no marker gap, only the lag the server sees.
//
// For both: the server's flush lag (pg_stat_replication.flush_lag: how
// long after the server flushed WAL the receiver said it had flushed it:
// for capsule, after the bucket acknowledged), median and p99 of samples
// every 500 ms; the write rate (objects or files, and bytes, per second);
// and the receiver's peak RSS (VmHWM). The table's anchor is
// pg_receivewal, measured in the same run on the same load.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/cnvrg/capsule/bench/internal/benchkit"
	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/internal/pgserver"
	"github.com/cnvrg/capsule/pitr"
	"gopkg.in/yaml.v3"
)

func main() {
	duration := flag.Duration("duration", 3*time.Minute, "how long each receiver runs under load")
	scale := flag.Int("scale", 10, "pgbench -i scale")
	clients := flag.Int("clients", 2, "pgbench clients")
	flag.Parse()
	if err := run(*duration, *scale, *clients); err != nil {
		fmt.Fprintln(os.Stderr, "pitrbench:", err)
		os.Exit(1)
	}
}

type sample struct {
	gap, lag, wlag time.Duration
}

type outcome struct {
	name           string
	samples        []sample
	objects, bytes int64
	// wal is the WAL the receiver confirmed writing during the run (the
	// server's write_lsn at the end minus at the start).
	wal     int64
	elapsed time.Duration
	rss     int64
}

func run(duration time.Duration, scale, clients int) error {
	ctx := context.Background()
	work, err := os.MkdirTemp("", "capsule-pitrbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	// The server may run as another user (root runs it as postgres).
	if err := os.Chmod(work, 0o755); err != nil {
		return err
	}
	bin, err := postgres.BinDir(150000)
	if err != nil {
		return err
	}
	srv, err := pgserver.New(bin, filepath.Join(work, "pg", "data"), filepath.Join(work, "pg"))
	if err != nil {
		return err
	}
	if err := srv.Init(ctx, map[string]string{"wal_level": "replica", "max_wal_senders": "10", "max_replication_slots": "10",
		"shared_buffers": "128MB", "max_wal_size": "1GB"}); err != nil {
		return err
	}
	if err := srv.Start(ctx, time.Minute); err != nil {
		return err
	}
	defer srv.Kill()
	if out, err := exec.Command("pgbench", "-i", "-q", "-s", strconv.Itoa(scale), "-h", "127.0.0.1", "-p", strconv.Itoa(srv.Port), "-U", "postgres", "postgres").CombinedOutput(); err != nil {
		return fmt.Errorf("pgbench -i: %w: %s", err, out)
	}
	if err := sql(ctx, srv, `CREATE TABLE marks (id serial PRIMARY KEY, at timestamptz NOT NULL)`); err != nil {
		return err
	}
	s3, err := benchkit.StartS3(work)
	if err != nil {
		return err
	}
	defer s3.Stop()
	bucketName, b, err := s3.NewBucket(ctx)
	if err != nil {
		return err
	}
	capsuleBin, err := benchkit.Build(ctx, work)
	if err != nil {
		return err
	}
	fmt.Printf("machine: %s; load before: %s\n", benchkit.Machine(), benchkit.LoadAvg())
	fmt.Printf("load: pgbench -c %d (scale %d) and a marker row every 100 ms, %s per receiver\n\n", clients, scale, duration)

	capsuleRun, err := measureCapsule(ctx, srv, b, s3, bucketName, capsuleBin, work, duration, clients)
	if err != nil {
		return err
	}
	rwRun, err := measureReceivewal(ctx, srv, bin, work, duration, clients, false)
	if err != nil {
		return err
	}
	rwSync, err := measureReceivewal(ctx, srv, bin, work, duration, clients, true)
	if err != nil {
		return err
	}
	t := benchkit.NewTable("receiver", "marker gap median", "marker gap p99", "write lag median", "flush lag median", "flush lag p99", "objects/s", "stored KB/s", "WAL KB/s", "peak RSS")
	for _, o := range []*outcome{capsuleRun, rwRun, rwSync} {
		gaps := durations(o.samples, func(s sample) time.Duration { return s.gap })
		lags := durations(o.samples, func(s sample) time.Duration { return s.lag })
		wlags := durations(o.samples, func(s sample) time.Duration { return s.wlag })
		gm, gp := "n/a", "n/a"
		if o.name == "capsule worker" {
			gm, gp = benchkit.Secs(pct(gaps, 50)), benchkit.Secs(pct(gaps, 99))
		}
		secs := o.elapsed.Seconds()
		t.Add(o.name, gm, gp, benchkit.Secs(pct(wlags, 50)), benchkit.Secs(pct(lags, 50)), benchkit.Secs(pct(lags, 99)),
			fmt.Sprintf("%.2f", float64(o.objects)/secs), fmt.Sprintf("%.0f", float64(o.bytes)/1000/secs),
			fmt.Sprintf("%.0f", float64(o.wal)/1000/secs), benchkit.MiB(o.rss))
	}
	t.Print(os.Stdout)
	fmt.Printf("\nload after: %s\n", benchkit.LoadAvg())
	fmt.Println("marker gap: newest committed marker minus newest marker the bucket holds (capsule only: pg_receivewal has no bucket).")
	fmt.Println("write/flush lag: pg_stat_replication; capsule reports a flush only after the bucket acknowledged the object.")
	fmt.Println("objects/s: capsule's WAL objects; pg_receivewal's finished segment files. stored KB/s: bucket bytes (zstd) or finished files.")
	return nil
}

func sql(ctx context.Context, srv *pgserver.Server, q string) error {
	conn, err := srv.Connect(ctx, "postgres")
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, q)
	return err
}

// load runs pgbench and the marker writer until ctx ends; committed
// returns, for a moment, the newest marker whose commit had returned by
// then.
type markers struct {
	mu   sync.Mutex
	done []time.Time
}

func (m *markers) newestBy(t time.Time) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := sort.Search(len(m.done), func(i int) bool { return m.done[i].After(t) })
	if i == 0 {
		return time.Time{}, false
	}
	return m.done[i-1], true
}

func startLoad(ctx context.Context, srv *pgserver.Server, clients int, d time.Duration) (*markers, func() error, error) {
	pgb := exec.CommandContext(ctx, "pgbench", "-c", strconv.Itoa(clients), "-T", strconv.Itoa(int(d.Seconds())), "-n",
		"-h", "127.0.0.1", "-p", strconv.Itoa(srv.Port), "-U", "postgres", "postgres")
	if err := pgb.Start(); err != nil {
		return nil, nil, err
	}
	m := &markers{}
	conn, err := srv.Connect(ctx, "postgres")
	if err != nil {
		return nil, nil, err
	}
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		defer conn.Close(context.Background())
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				done <- nil
				return
			case <-t.C:
			}
			if _, err := conn.Exec(ctx, `INSERT INTO marks (at) VALUES (clock_timestamp())`); err != nil {
				done <- err
				return
			}
			now := time.Now()
			m.mu.Lock()
			m.done = append(m.done, now)
			m.mu.Unlock()
		}
	}()
	return m, func() error {
		werr := pgb.Wait()
		close(stop)
		if err := <-done; err != nil {
			return err
		}
		return werr
	}, nil
}

// lags reads pg_stat_replication of the receiver named app: its flush
// and write lag, and the WAL position it wrote.
func lags(ctx context.Context, srv *pgserver.Server, app string) (flush, write time.Duration, writeLSN int64) {
	conn, err := srv.Connect(ctx, "postgres")
	if err != nil {
		return 0, 0, 0
	}
	defer conn.Close(ctx)
	var f, w *float64
	var pos *int64
	err = conn.QueryRow(ctx, `SELECT extract(epoch FROM flush_lag) * 1e6, extract(epoch FROM write_lag) * 1e6, (write_lsn - '0/0')::bigint
		FROM pg_stat_replication WHERE application_name = $1`, app).Scan(&f, &w, &pos)
	if err != nil {
		return 0, 0, 0
	}
	if f != nil {
		flush = time.Duration(*f) * time.Microsecond
	}
	if w != nil {
		write = time.Duration(*w) * time.Microsecond
	}
	if pos != nil {
		writeLSN = *pos
	}
	return flush, write, writeLSN
}

func measureCapsule(ctx context.Context, srv *pgserver.Server, b bucket.Bucket, s3 *benchkit.S3, bucketName, bin, work string, d time.Duration, clients int) (*outcome, error) {
	cfg := map[string]any{
		"bucket": s3.URL(bucketName), "cluster": "bench",
		"worker":  map[string]any{"lease": "15s"},
		"sources": map[string]any{"pg": map[string]any{"engine": "postgres", "url": srv.URL("postgres"), "pitr": true}},
	}
	data, _ := yaml.Marshal(cfg)
	cfgPath := filepath.Join(work, "capsule.yaml")
	if err := os.WriteFile(cfgPath, data, 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(work, "worker.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "worker", "--config", cfgPath, "--name", "bench")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + work}, s3.Env()...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
	// Wait for the stream to write, then measure.
	deadline := time.Now().Add(time.Minute)
	for {
		if _, _, err := pitr.Newest(ctx, b, "bench", "pg"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the worker wrote no WAL within a minute (log %s)", logf.Name())
		}
		if err := sql(ctx, srv, `SELECT pg_switch_wal()`); err != nil {
			return nil, err
		}
		time.Sleep(500 * time.Millisecond)
	}
	objs0, bytes0, err := walUsage(ctx, b)
	if err != nil {
		return nil, err
	}
	m, wait, err := startLoad(ctx, srv, clients, d)
	if err != nil {
		return nil, err
	}
	o := &outcome{name: "capsule worker"}
	_, _, pos0 := lags(ctx, srv, "capsule")
	start := time.Now()
	for time.Since(start) < d {
		time.Sleep(500 * time.Millisecond)
		now := time.Now()
		_, h, err := pitr.Newest(ctx, b, "bench", "pg")
		if err != nil {
			continue
		}
		committed, ok1 := m.newestBy(now)
		recoverable, ok2 := m.newestBy(h.ServerTime)
		if !ok1 || !ok2 {
			continue
		}
		lag, wlag, _ := lags(ctx, srv, "capsule")
		o.samples = append(o.samples, sample{gap: committed.Sub(recoverable), lag: lag, wlag: wlag})
	}
	if err := wait(); err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	o.elapsed = time.Since(start)
	_, _, pos1 := lags(ctx, srv, "capsule")
	o.wal = pos1 - pos0
	objs1, bytes1, err := walUsage(ctx, b)
	if err != nil {
		return nil, err
	}
	o.objects, o.bytes = objs1-objs0, bytes1-bytes0
	o.rss, _ = benchkit.VmHWM(cmd.Process.Pid)
	// Free the capsule slot so pg_receivewal's run starts clean.
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
	_ = sql(ctx, srv, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'capsule_%'`)
	return o, nil
}

func walUsage(ctx context.Context, b bucket.Bucket) (int64, int64, error) {
	var n, size int64
	err := bucket.Walk(ctx, b, pitr.WALPrefix, func(o bucket.ObjectInfo) error {
		n++
		size += o.Size
		return nil
	})
	return n, size, err
}

func measureReceivewal(ctx context.Context, srv *pgserver.Server, bin, work string, d time.Duration, clients int, synchronous bool) (*outcome, error) {
	name, slot := "pg_receivewal (anchor)", "bench_rw"
	args := []string{}
	if synchronous {
		name, slot = "pg_receivewal --synchronous", "bench_rw_sync"
		args = append(args, "--synchronous")
	}
	dir := filepath.Join(work, slot)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	conn := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres application_name=%s", srv.Port, slot)
	if out, err := exec.Command(filepath.Join(bin, "pg_receivewal"), "-d", conn, "--slot", slot, "--create-slot").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pg_receivewal --create-slot: %w: %s", err, out)
	}
	defer func() { _ = sql(ctx, srv, `SELECT pg_drop_replication_slot('`+slot+`')`) }()
	args = append(args, "-d", conn, "--slot", slot, "-D", dir, "--no-loop", "-s", "1")
	cmd := exec.Command(filepath.Join(bin, "pg_receivewal"), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	time.Sleep(time.Second)
	files0, bytes0 := dirUsage(dir)
	_, wait, err := startLoad(ctx, srv, clients, d)
	if err != nil {
		return nil, err
	}
	o := &outcome{name: name}
	_, _, pos0 := lags(ctx, srv, slot)
	start := time.Now()
	for time.Since(start) < d {
		time.Sleep(500 * time.Millisecond)
		lag, wlag, _ := lags(ctx, srv, slot)
		o.samples = append(o.samples, sample{lag: lag, wlag: wlag})
	}
	if err := wait(); err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	o.elapsed = time.Since(start)
	_, _, pos1 := lags(ctx, srv, slot)
	o.wal = pos1 - pos0
	files1, bytes1 := dirUsage(dir)
	o.objects, o.bytes = files1-files0, bytes1-bytes0
	o.rss, _ = benchkit.VmHWM(cmd.Process.Pid)
	return o, nil
}

// dirUsage counts pg_receivewal's finished segment files and the bytes
// of WAL it wrote (finished files plus the .partial one's position is
// not known from its size: it is preallocated, so only finished files
// count).
func dirUsage(dir string) (int64, int64) {
	ents, _ := os.ReadDir(dir)
	var n, size int64
	for _, e := range ents {
		if filepath.Ext(e.Name()) == ".partial" {
			continue
		}
		if fi, err := e.Info(); err == nil {
			n++
			size += fi.Size()
		}
	}
	return n, size
}

func durations(s []sample, f func(sample) time.Duration) []time.Duration {
	out := make([]time.Duration, len(s))
	for i, x := range s {
		out[i] = f(x)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := (len(d)*p + 99) / 100
	return d[min(max(i-1, 0), len(d)-1)]
}
