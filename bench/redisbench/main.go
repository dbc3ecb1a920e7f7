package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cnvrg/capsule/bench/internal/benchkit"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/requests"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "redisbench:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		keys     = flag.Int("keys", 1000000, "keys to load, back up and restore")
		valueLen = flag.Int("value", 32, "bytes per value")
		workFlag = flag.String("work", filepath.Join(os.TempDir(), "capsule-redisbench"), "directory for the servers' files, the S3 server's data and the workers' logs (emptied first)")
		bin      = flag.String("capsule", "", "capsule binary to run as the worker (default: build ./cmd/capsule)")
		runs     = flag.Int("runs", 1, "measure every step this many times and keep the fastest")
		rdb      = flag.Bool("rdb", true, "also back up and restore in RDB mode")
		scan     = flag.Bool("scan", true, "also back up in logical mode with logicalRead: scan (the SCAN+DUMP read, the fallback when the server refuses SYNC)")
		diskless = flag.String("diskless-load", "", "the target's repl-diskless-load (default: the server's, disabled): on-empty-db or swapdb load a full sync's transfer as it streams")
		profile  = flag.String("cpuprofile", "", "instead of the table: back up and restore once per mode in this process under the CPU profiler, writing FILE.<mode>.backup and FILE.<mode>.restore")
	)
	flag.Parse()
	if *keys < 1 || *valueLen < 1 {
		return errors.New("-keys and -value must be positive")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	work := *workFlag
	if err := benchkit.PrepareWorkDir(work); err != nil {
		return err
	}
	version, err := benchkit.Output(ctx, "redis-server", "--version")
	if err != nil {
		return err
	}
	capsuleBin := *bin
	if capsuleBin == "" {
		fmt.Fprintln(os.Stderr, "building ./cmd/capsule")
		if capsuleBin, err = benchkit.Build(ctx, work); err != nil {
			return err
		}
	}
	s3, err := benchkit.StartS3(work)
	if err != nil {
		return err
	}
	defer s3.Stop()
	bucketName, bkt, err := s3.NewBucket(ctx)
	if err != nil {
		return err
	}
	src, err := startRedis(ctx, filepath.Join(work, "source"))
	if err != nil {
		return err
	}
	defer src.stop()
	var targetConf []string
	if *diskless != "" {
		targetConf = append(targetConf, "repl-diskless-load "+*diskless)
	}
	dst, err := startRedis(ctx, filepath.Join(work, "target"), targetConf...)
	if err != nil {
		return err
	}
	defer dst.stop()
	source := func(port int, mode string) map[string]any {
		return map[string]any{"engine": "redis", "url": fmt.Sprintf("redis://127.0.0.1:%d", port), "mode": mode}
	}
	scanSource := source(src.port, "logical")
	scanSource["logicalRead"] = "scan"
	replaySource := source(dst.port, "logical")
	replaySource["restoreLoad"] = "replay"
	c := &benchkit.Capsule{Bin: capsuleBin, Dir: work, S3: s3, BucketName: bucketName, Bucket: bkt,
		Sources: map[string]map[string]any{
			"redis":               source(src.port, "logical"),
			"redis-rdb":           source(src.port, "rdb"),
			"redis-scan":          scanSource,
			"redis-target":        source(dst.port, "logical"),
			"redis-target-replay": replaySource,
		}}

	fmt.Printf("machine: %s\n", benchkit.Machine())
	fmt.Printf("%s; no persistence, repl-diskless-sync-delay 0; S3: versitygw on loopback, same disk\n", version)
	if *diskless != "" {
		fmt.Printf("target: repl-diskless-load %s\n", *diskless)
	}
	fmt.Printf("load average at start: %s\n", benchkit.LoadAvg())

	n := int64(*keys)
	t := &table{runs: max(1, *runs)}
	fmt.Fprintf(os.Stderr, "loading %d keys\n", n)
	servers := func() time.Duration { return src.cpu() + dst.cpu() }
	before := servers()
	tm, err := src.load(ctx, n, *valueLen)
	if err != nil {
		return err
	}
	t.record(row{name: "load: redis-cli --pipe (SET)", wall: tm.Wall, cpu: tm.CPU, server: servers() - before})
	mem, err := src.info(ctx, "used_memory")
	if err != nil {
		return err
	}
	modes := []string{"logical"}
	if *rdb {
		modes = append(modes, "rdb")
	}
	if *profile != "" {
		return profileModes(ctx, c, dst, modes, *profile)
	}
	rdbFile := filepath.Join(work, "cli.rdb")
	for run := 1; run <= t.runs; run++ {
		fmt.Fprintf(os.Stderr, "run %d of %d: redis-cli --rdb\n", run, t.runs)
		before := servers()
		tm, err := benchkit.Time(ctx, benchkit.Command{Name: "redis-cli", Args: []string{"-p", strconv.Itoa(src.port), "--rdb", rdbFile}})
		if err != nil {
			return err
		}
		// The server's CPU counts its fork once it has reaped it.
		if err := src.waitNoFork(ctx); err != nil {
			return err
		}
		t.record(row{name: rowCLI, wall: tm.Wall, output: fileSize(rdbFile), cpu: tm.CPU, server: servers() - before})

		fmt.Fprintf(os.Stderr, "redis-server loading that file\n")
		ld, err := loadRDB(ctx, rdbFile, n)
		if err != nil {
			return err
		}
		t.record(ld)
		os.Remove(rdbFile)

		if *scan {
			fmt.Fprintf(os.Stderr, "capsule backup (logical, scan)\n")
			req := &requests.Request{Kind: requests.KindBackup, Source: "redis-scan"}
			before := servers()
			out, err := c.Run(ctx, req, executor.DefaultCompression)
			if err != nil {
				return err
			}
			t.record(row{name: rowBackupScan, wall: out.Wall, work: out.Work(), output: out.Result.StoredBytes, rss: out.PeakRSS,
				cpu: out.CPU, server: servers() - before, s3: out.S3CPU})
		}
		for _, mode := range modes {
			name := "redis"
			if mode == "rdb" {
				name = "redis-rdb"
			}
			fmt.Fprintf(os.Stderr, "capsule backup (%s)\n", mode)
			req := &requests.Request{Kind: requests.KindBackup, Source: name}
			before := servers()
			out, err := c.Run(ctx, req, executor.DefaultCompression)
			if err != nil {
				return err
			}
			// Both modes read a snapshot from a fork: count its CPU.
			if err := src.waitNoFork(ctx); err != nil {
				return err
			}
			t.record(row{name: "capsule backup (" + mode + ")", wall: out.Wall, work: out.Work(), output: out.Result.StoredBytes, rss: out.PeakRSS,
				cpu: out.CPU, server: servers() - before, s3: out.S3CPU})

			// The same backup restored both ways, back to back: by a
			// full sync (restoreLoad: auto, which takes it here) and by
			// the replay (restoreLoad: replay).
			for _, load := range []string{"replicate", "replay"} {
				target, rowName := "redis-target", "capsule restore ("+mode+")"
				if load == "replay" {
					target, rowName = "redis-target-replay", "capsule restore ("+mode+", replay)"
				}
				fmt.Fprintf(os.Stderr, "%s\n", rowName)
				if err := dst.do(ctx, "FLUSHALL"); err != nil {
					return err
				}
				rreq := &requests.Request{Kind: requests.KindRestore, BackupID: req.ID, Target: target}
				before = servers()
				out, err = c.Run(ctx, rreq, executor.DefaultCompression)
				if err != nil {
					return err
				}
				t.record(row{name: rowName, wall: out.Wall, work: out.Work(), rss: out.PeakRSS,
					cpu: out.CPU, server: servers() - before, s3: out.S3CPU})
				got, err := dst.dbsize(ctx)
				if err != nil {
					return err
				}
				if got != n {
					return fmt.Errorf("%s: the target holds %d keys, want %d", rowName, got, n)
				}
				if v, err := dst.reply(ctx, "INFO", "replication"); err != nil || !strings.Contains(v, "role:master") {
					return fmt.Errorf("%s: the target is not a master after the restore (%v)", rowName, err)
				}
			}
		}
	}
	fmt.Printf("\n%d keys (%d-byte values, one in ten with a TTL), used_memory %s\n", n, *valueLen, benchkit.MB(mem))
	t.print(os.Stdout, n)
	fmt.Printf("load average at end: %s\n", benchkit.LoadAvg())
	_ = os.RemoveAll(filepath.Join(work, "s3data"))
	return nil
}

// Row names the targets compare.
const (
	rowCLI            = "redis-cli --rdb FILE"
	rowLoad           = "redis-server loading FILE"
	rowBackupLogical  = "capsule backup (logical)"
	rowBackupScan     = "capsule backup (logical, scan)"
	rowRestoreLogical = "capsule restore (logical)"
	rowBackupRDB      = "capsule backup (rdb)"
	rowRestoreRDB     = "capsule restore (rdb)"
	rowReplayLogical  = "capsule restore (logical, replay)"
	rowReplayRDB      = "capsule restore (rdb, replay)"
)

// row is one step: the fastest of its runs.
type row struct {
	name string
	wall time.Duration
	// work is the executor's time on the request (its result's start to
	// finish): the wall without the worker's start-up, claim and exit.
	work   time.Duration
	output int64
	rss    int64
	// cpu is the tool's or the worker's; server is both redis-servers'
	// (with their forks); s3 is versitygw's.
	cpu, server, s3 time.Duration
}

type table struct {
	runs int
	rows []*row
}

// record keeps the fastest of the runs of a step, and the highest RSS.
func (t *table) record(m row) {
	for _, r := range t.rows {
		if r.name == m.name {
			rss := max(r.rss, m.rss)
			if m.wall < r.wall {
				*r = m
			}
			r.rss = rss
			return
		}
	}
	t.rows = append(t.rows, &m)
}

func (t *table) print(w io.Writer, keys int64) {
	var base time.Duration
	for _, r := range t.rows {
		if r.name == rowCLI {
			base = r.wall
		}
	}
	secs := func(d time.Duration) string {
		if d <= 0 {
			return ""
		}
		return fmt.Sprintf("%.1f", d.Seconds())
	}
	tab := benchkit.NewTable("step", "wall", "work", "keys/s", "output", "wall/redis-cli --rdb", "CPU s: client", "redis", "S3", "worker peak RSS")
	for _, r := range t.rows {
		out, rss := "", ""
		if r.output > 0 {
			out = benchkit.MB(r.output)
		}
		if r.rss > 0 {
			rss = benchkit.MiB(r.rss)
		}
		work := ""
		if r.work > 0 {
			work = benchkit.Secs(r.work)
		}
		tab.Add(r.name, benchkit.Secs(r.wall), work, fmt.Sprintf("%.0f", float64(keys)/r.wall.Seconds()), out,
			benchkit.Ratio(r.wall.Seconds(), base.Seconds()), secs(r.cpu), secs(r.server), secs(r.s3), rss)
	}
	tab.Print(w)
	fmt.Fprintln(w, "capsule rows: a `capsule worker --once` process from start to exit (start-up, claim, the work, commit;")
	fmt.Fprintln(w, "work: the executor's time on the request, from its result),")
	fmt.Fprintln(w, "zstd to versitygw; restores go into a second, emptied redis-server and read the artifact twice (check,")
	fmt.Fprintln(w, "then load): \"capsule restore (MODE)\" by one full sync from the worker (restoreLoad: auto), \", replay\"")
	fmt.Fprintln(w, "with commands (restoreLoad: replay), the same backup back to back. CPU s: client is the tool's or the worker's; redis is both servers' with their forks;")
	fmt.Fprintln(w, "S3 is versitygw's. Peak RSS: the worker's own VmHWM. Logical backup: the keyspace read over replication")
	fmt.Fprintln(w, "(logicalRead: auto); \"logical, scan\": logicalRead: scan, SCAN + PEXPIRETIME + DUMP (the fallback).")
	if t.runs > 1 {
		fmt.Fprintf(w, "fastest of %d runs per step\n", t.runs)
	}
	t.targets(w, keys)
}

// targets prints issue 20's Redis targets, each against its anchor in
// this run.
func (t *table) targets(w io.Writer, keys int64) {
	wall := map[string]time.Duration{}
	for _, r := range t.rows {
		wall[r.name] = r.wall
	}
	fmt.Fprintln(w, "\ntargets (issue 20), in this run:")
	tab := benchkit.NewTable("target", "capsule", "anchor", "ratio", "")
	check := func(target, row, anchor string) {
		c, a := wall[row], wall[anchor]
		if c == 0 || a == 0 {
			return
		}
		met := "met"
		if c > a {
			met = "NOT met"
		}
		tab.Add(target, benchkit.Secs(c), benchkit.Secs(a)+" "+anchor, fmt.Sprintf("%.2f×", c.Seconds()/a.Seconds()), met)
	}
	check("logical backup keys/s ≥ redis-cli --rdb", rowBackupLogical, rowCLI)
	check("logical restore ≤ redis-server loading the RDB", rowRestoreLogical, rowLoad)
	check("rdb backup ≤ logical backup", rowBackupRDB, rowBackupLogical)
	check("rdb restore ≤ logical restore", rowRestoreRDB, rowRestoreLogical)
	check("(replay) logical restore ≤ redis-server loading the RDB", rowReplayLogical, rowLoad)
	check("(replay) rdb restore ≤ logical restore", rowReplayRDB, rowReplayLogical)
	check("full sync against replay, logical", rowRestoreLogical, rowReplayLogical)
	check("full sync against replay, rdb", rowRestoreRDB, rowReplayRDB)
	tab.Print(w)
	fmt.Fprintf(w, "ratio: capsule's wall over the anchor's for the same %d keys (≤ 1.00× meets the target)\n", keys)
}

// loadRDB times a redis-server started on file until it has loaded it:
// from the start of the process until PING answers, INFO persistence
// says loading:0 and DBSIZE is keys.
func loadRDB(ctx context.Context, file string, keys int64) (row, error) {
	dir := filepath.Join(filepath.Dir(file), "load")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return row{}, err
	}
	start := time.Now()
	s, err := startRedis(ctx, dir, "dbfilename "+filepath.Base(file), "dir "+filepath.Dir(file))
	if err != nil {
		return row{}, err
	}
	defer s.stop()
	for {
		v, err := s.reply(ctx, "INFO", "persistence")
		if err == nil && strings.Contains(v, "loading:0") {
			break
		}
		if time.Since(start) > time.Minute {
			return row{}, fmt.Errorf("redis-server did not load %s within a minute", file)
		}
		time.Sleep(time.Millisecond)
	}
	wall := time.Since(start)
	got, err := s.dbsize(ctx)
	if err != nil {
		return row{}, err
	}
	if got != keys {
		return row{}, fmt.Errorf("redis-server loaded %d keys from %s, want %d", got, file, keys)
	}
	return row{name: rowLoad, wall: wall, server: s.cpu()}, nil
}

// redisServer is a redis-server this program started.
type redisServer struct {
	port int
	dir  string
	cmd  *exec.Cmd
}

func startRedis(ctx context.Context, dir string, extra ...string) (*redisServer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	port, err := benchkit.FreePort()
	if err != nil {
		return nil, err
	}
	conf := strings.Join([]string{
		"bind 127.0.0.1",
		"port " + strconv.Itoa(port),
		`save ""`,
		"appendonly no",
		"dir " + dir,
		"repl-diskless-sync-delay 0",
		"logfile " + filepath.Join(dir, "redis.log"),
	}, "\n") + "\n" + strings.Join(extra, "\n") + "\n"
	confFile := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	s := &redisServer{port: port, dir: dir, cmd: exec.Command("redis-server", confFile)}
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- s.cmd.Wait() }()
	deadline := time.After(30 * time.Second)
	for {
		if err := s.do(ctx, "PING"); err == nil {
			return s, nil
		}
		select {
		case err := <-exited:
			return nil, fmt.Errorf("redis-server exited: %v (log %s)", err, filepath.Join(dir, "redis.log"))
		case <-deadline:
			s.stop()
			return nil, fmt.Errorf("redis-server on port %d did not answer within 30s", port)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// waitNoFork waits until the server has no child (the snapshot's fork
// for a replica or BGSAVE) and has reaped the last one.
func (s *redisServer) waitNoFork(ctx context.Context) error {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		v, err := s.reply(ctx, "INFO", "persistence")
		if err != nil {
			return err
		}
		if strings.Contains(v, "rdb_bgsave_in_progress:0") && strings.Contains(v, "current_fork_perc:0.00") {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return errors.New("the redis-server's snapshot fork did not end within a minute")
}

// cpu is the server's CPU time so far, with its reaped forks (BGSAVE,
// the replication snapshot).
func (s *redisServer) cpu() time.Duration {
	d, _ := benchkit.ProcCPU(s.cmd.Process.Pid)
	return d
}

func (s *redisServer) stop() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
	}
}

// do sends one inline command and reads a one-line reply, failing on an
// error reply.
func (s *redisServer) do(ctx context.Context, args ...string) error {
	_, err := s.reply(ctx, args...)
	return err
}

func (s *redisServer) reply(ctx context.Context, args ...string) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", "127.0.0.1:"+strconv.Itoa(s.port))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Minute))
	if _, err := conn.Write(resp(args...)); err != nil {
		return "", err
	}
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	switch {
	case strings.HasPrefix(line, "-"):
		return "", fmt.Errorf("redis %s: %s", args[0], line[1:])
	case strings.HasPrefix(line, "$"):
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", fmt.Errorf("redis %s: reply %q", args[0], line)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return strings.TrimLeft(line, "+:"), nil
}

func (s *redisServer) dbsize(ctx context.Context) (int64, error) {
	v, err := s.reply(ctx, "DBSIZE")
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(v, 10, 64)
}

// info returns one field of INFO as a number.
func (s *redisServer) info(ctx context.Context, field string) (int64, error) {
	v, err := s.reply(ctx, "INFO", "memory")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(v, "\n") {
		if val, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return strconv.ParseInt(val, 10, 64)
		}
	}
	return 0, fmt.Errorf("INFO has no %s", field)
}

// load writes n SET commands (key:00000001 … with valueLen bytes of
// text; every tenth with a one-day TTL) into a file, and times
// redis-cli --pipe sending them.
func (s *redisServer) load(ctx context.Context, n int64, valueLen int) (benchkit.Timing, error) {
	path := filepath.Join(s.dir, "load.resp")
	f, err := os.Create(path)
	if err != nil {
		return benchkit.Timing{}, err
	}
	defer os.Remove(path)
	w := bufio.NewWriterSize(f, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	val := make([]byte, valueLen)
	for i := int64(1); i <= n; i++ {
		for j := range val {
			val[j] = letters[rng.IntN(len(letters))]
		}
		key := fmt.Sprintf("key:%08d", i)
		if i%10 == 0 {
			_, err = w.Write(resp("SET", key, string(val), "EX", "86400"))
		} else {
			_, err = w.Write(resp("SET", key, string(val)))
		}
		if err != nil {
			f.Close()
			return benchkit.Timing{}, err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return benchkit.Timing{}, err
	}
	if err := f.Close(); err != nil {
		return benchkit.Timing{}, err
	}
	cmd := benchkit.Command{Shell: true, Name: fmt.Sprintf("redis-cli -p %d --pipe < %s", s.port, benchkit.ShellQuote(path))}
	t, err := benchkit.Time(ctx, cmd)
	if err != nil {
		return t, err
	}
	got, err := s.dbsize(ctx)
	if err != nil {
		return t, err
	}
	if got != n {
		return t, fmt.Errorf("loaded %d keys, want %d", got, n)
	}
	return t, nil
}

// resp encodes a command in the Redis protocol.
func resp(args ...string) []byte {
	b := []byte("*" + strconv.Itoa(len(args)) + "\r\n")
	for _, a := range args {
		b = append(b, '$')
		b = strconv.AppendInt(b, int64(len(a)), 10)
		b = append(b, "\r\n"...)
		b = append(b, a...)
		b = append(b, "\r\n"...)
	}
	return b
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}
