package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"filippo.io/age"
	"github.com/cnvrg/capsule/bench/internal/benchkit"
	"github.com/jackc/pgx/v5"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "pgbench:", err)
		os.Exit(1)
	}
}

// Names of the databases the benchmark restores into.
const (
	capsuleTarget   = "capsule_bench_restore"
	pgRestoreTarget = "capsule_bench_pgrestore"
)

type bench struct {
	pgURL    *url.URL // the maintenance database; the path is replaced per database
	admin    *pgx.Conn
	work     string
	progress io.Writer
	capsule  *benchkit.Capsule
	levels   []string
	runs     int
	// encryption, when set, is the worker.encryption section of the
	// encrypted rows (-encrypt).
	encryption map[string]any
	// signingKey, when set (-sign), adds signed rows: the first level's
	// backup and restore again with the worker signing (and checking).
	signingKey string
}

func run() error {
	var (
		size     = flag.String("size", "2.4GB", "database size on disk (pg_database_size)")
		sizes    = flag.String("sizes", "", "comma-separated sizes to measure in turn, e.g. 0.5GB,2.4GB (overrides -size); the worker's peak RSS is compared between them")
		rebuild  = flag.Bool("rebuild", false, "rebuild the database even when one of this size exists")
		levels   = flag.String("compression", "zstd-fastest", "comma-separated worker.compression settings to back up with (zstd, zstd-fastest, zstd-better, none); the first is restored and judged")
		pgFlag   = flag.String("pg", "postgres://postgres@127.0.0.1:5432/postgres", "PostgreSQL server (a superuser, no password: trust or ~/.pgpass)")
		workFlag = flag.String("work", filepath.Join(os.TempDir(), "capsule-pgbench"), "directory for dump files, the S3 server's data and the workers' logs (emptied first)")
		bin      = flag.String("capsule", "", "capsule binary to run as the worker (default: build ./cmd/capsule)")
		runs     = flag.Int("runs", 1, "measure every step this many times and keep the fastest")
		drop     = flag.Bool("drop", false, "drop the benchmark databases at the end (they are kept for the next run by default)")
		encrypt  = flag.Bool("encrypt", false, "also back up and restore with age encryption (worker.encryption to a fresh X25519 key): rows '(LEVEL, age)' beside the plain ones, and the target of staying within 5 % of their wall time")
		sign     = flag.Bool("sign", false, "also back up and restore with the first compression setting with signed indexes (a fresh ed25519 key), rows marked \"signed\"")
		cpuprof  = flag.String("cpuprofile", "", "instead of the table: back up the database once, and restore it, in this process (the worker's executor and engine) under the CPU profiler; write the profiles to FILE and FILE.restore")
	)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var targets []int64
	list := *size
	if *sizes != "" {
		list = *sizes
	}
	for _, s := range strings.Split(list, ",") {
		n, err := benchkit.ParseSize(s)
		if err != nil {
			return fmt.Errorf("-size: %w", err)
		}
		targets = append(targets, n)
	}
	b := &bench{work: *workFlag, progress: os.Stderr, runs: max(1, *runs)}
	for _, l := range strings.Split(*levels, ",") {
		if !slices.Contains([]string{"zstd", "zstd-fastest", "zstd-better", "none"}, l) {
			return fmt.Errorf("-compression: %q is not one of zstd, zstd-fastest, zstd-better, none", l)
		}
		b.levels = append(b.levels, l)
	}
	u, err := url.Parse(*pgFlag)
	if err != nil || u.Scheme != "postgres" && u.Scheme != "postgresql" || u.Host == "" {
		return fmt.Errorf("-pg: want postgres://USER@HOST:PORT/DB")
	}
	if _, ok := u.User.Password(); ok {
		return fmt.Errorf("-pg: no password in the URL (use ~/.pgpass)")
	}
	if u.Port() == "" {
		u.Host += ":5432"
	}
	if u.User.Username() == "" {
		u.User = url.User("postgres")
	}
	b.pgURL = u

	if err := benchkit.PrepareWorkDir(b.work); err != nil {
		return err
	}
	if b.admin, err = b.connect(ctx, strings.TrimPrefix(u.Path, "/")); err != nil {
		return err
	}
	defer b.admin.Close(context.Background())
	var serverVersion string
	if err := b.admin.QueryRow(ctx, `SHOW server_version`).Scan(&serverVersion); err != nil {
		return err
	}
	dumpVersion, err := benchkit.Output(ctx, "pg_dump", "--version")
	if err != nil {
		return err
	}

	capsuleBin := *bin
	if capsuleBin == "" && *cpuprof == "" {
		fmt.Fprintln(b.progress, "building ./cmd/capsule")
		if capsuleBin, err = benchkit.Build(ctx, b.work); err != nil {
			return err
		}
	}
	s3, err := benchkit.StartS3(b.work)
	if err != nil {
		return err
	}
	defer s3.Stop()
	bucketName, bkt, err := s3.NewBucket(ctx)
	if err != nil {
		return err
	}
	b.capsule = &benchkit.Capsule{Bin: capsuleBin, Dir: b.work, S3: s3, BucketName: bucketName, Bucket: bkt}
	if *encrypt {
		if b.encryption, err = newAgeKey(b.work); err != nil {
			return err
		}
	}
	if *sign {
		if b.signingKey, err = benchkit.SigningKey(b.work); err != nil {
			return err
		}
	}
	if *encrypt && *sign {
		sealedSuffix = ", age, signed"
	}

	fmt.Printf("machine: %s\n", benchkit.Machine())
	fmt.Printf("PostgreSQL %s, %s; S3: versitygw on loopback, same disk\n", serverVersion, dumpVersion)
	fmt.Printf("load average at start: %s\n", benchkit.LoadAvg())

	var results []*sizeResult
	for _, target := range targets {
		name := fmt.Sprintf("capsule_bench_%dmb", target/1e6)
		db, err := b.ensureDB(ctx, name, target, *rebuild)
		if err != nil {
			return err
		}
		if *cpuprof != "" {
			if err := b.profileBackup(ctx, db, b.levels[0], *cpuprof); err != nil {
				return err
			}
			continue
		}
		r, err := b.measure(ctx, db)
		if err != nil {
			return err
		}
		r.print(os.Stdout, b.levels)
		results = append(results, r)
	}
	if len(results) > 1 && *cpuprof == "" {
		fmt.Println("\nworker peak RSS by database size (capsule backup, " + b.levels[0] + "):")
		first := results[0].get(backupStep(b.levels[0]))
		for _, r := range results {
			s := r.get(backupStep(b.levels[0]))
			fmt.Printf("  %-24s %s on disk: %s  (%s the smallest's)\n", r.db.Name, gb(r.db.Size), benchkit.MiB(s.rss), benchkit.Ratio(float64(s.rss), float64(first.rss)))
		}
		fmt.Println("worker peak RSS by database size (capsule restore, " + b.levels[0] + "):")
		first = results[0].get(restoreStep(b.levels[0]))
		for _, r := range results {
			s := r.get(restoreStep(b.levels[0]))
			fmt.Printf("  %-24s %s on disk: %s  (%s the smallest's)\n", r.db.Name, gb(r.db.Size), benchkit.MiB(s.rss), benchkit.Ratio(float64(s.rss), float64(first.rss)))
		}
	}
	fmt.Printf("load average at end: %s\n", benchkit.LoadAvg())
	if *drop {
		for _, r := range results {
			if err := b.dropDB(ctx, r.db.Name); err != nil {
				return err
			}
		}
	}
	// The logs and configurations stay for inspection; the data goes.
	_ = os.RemoveAll(filepath.Join(b.work, "s3data"))
	return nil
}

func (b *bench) connect(ctx context.Context, db string) (*pgx.Conn, error) {
	u := *b.pgURL
	u.Path = "/" + db
	q := u.Query()
	if !q.Has("sslmode") {
		q.Set("sslmode", "disable")
	}
	u.RawQuery = q.Encode()
	return pgx.Connect(ctx, u.String())
}

// toolEnv points pg_dump and pg_restore at the server.
func (b *bench) toolEnv() []string {
	return []string{"PGHOST=" + b.pgURL.Hostname(), "PGPORT=" + b.pgURL.Port(), "PGUSER=" + b.pgURL.User.Username(), "PGSSLMODE=disable"}
}

// source is a postgres source's settings; the worker's configuration
// adds engine: postgres.
func (b *bench) source(db string) map[string]any {
	return map[string]any{
		"url":     fmt.Sprintf("postgres://%s@%s/%s", b.pgURL.User.Username(), b.pgURL.Host, db),
		"sslmode": "disable",
		// The benchmark measures speed as the -pg superuser, which a
		// restore refuses unless the source allows it.
		"allowSuperuser": true,
	}
}

// analyze runs ANALYZE in db, as capsule's engine does after its
// pg_restore, and returns how long it took.
func (b *bench) analyze(ctx context.Context, db string) (time.Duration, error) {
	conn, err := b.connect(ctx, db)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	start := time.Now()
	if _, err := conn.Exec(ctx, `ANALYZE`); err != nil {
		return 0, fmt.Errorf("analyze %s: %w", db, err)
	}
	return time.Since(start), nil
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// newAgeKey writes a fresh age identity into dir and returns the
// worker.encryption section that encrypts to it and opens with it.
func newAgeKey(dir string) (map[string]any, error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "age-identity.txt")
	if err := os.WriteFile(path, []byte(id.String()+"\n"), 0o600); err != nil {
		return nil, err
	}
	return map[string]any{"recipients": []string{id.Recipient().String()}, "identityFile": path}, nil
}
