package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/cnvrg/capsule/bench/internal/benchkit"
	"github.com/cnvrg/capsule/requests"
)

// Steps of the table besides capsule's own.
const (
	stepZ0      = "pg_dump -Fc -Z0 > /dev/null"
	stepFc      = "pg_dump -Fc -f FILE"
	stepZstd    = "pg_dump -Fc -Z0 | zstd -T2 -3"
	stepDir     = "pg_dump -Fd -j2 -f DIR"
	stepRestore = "pg_restore -d DB FILE"
	// stepRestoreAn adds the ANALYZE that capsule's engine runs after its
	// pg_restore; stepPipeAn is what that engine runs, without capsule:
	// pg_restore reading the uncompressed archive from a pipe, then
	// ANALYZE.
	stepRestoreAn = "pg_restore -d DB FILE, ANALYZE"
	stepPipeAn    = "cat Z0FILE | pg_restore -d DB, ANALYZE"
	stepRestDir   = "pg_restore -j2 -d DB DIR"
	stepRestJ2    = "pg_restore -j2 -d DB FILE"
)

func backupStep(level string) string  { return "capsule backup (" + level + ")" }
func restoreStep(level string) string { return "capsule restore (" + level + ")" }

// sealedSuffix marks the encrypted rows (-encrypt); with -sign as well
// they are signed too: issue 18's "encryption and signing on" run.
var sealedSuffix = ", age"

// sealed names a level's encrypted rows (-encrypt).
func sealed(level string) string { return level + sealedSuffix }

// signed names a step's row run with signed indexes (-sign).
func signed(step string) string { return strings.TrimSuffix(step, ")") + ", signed)" }

// streamStep is capsule's restore with restoreJobs 1: the archive
// streams from the bucket into one pg_restore, with no local copy.
func streamStep(level string) string { return "capsule restore (" + level + ", restoreJobs 1)" }

// measurement is one run of one step.
type measurement struct {
	wall   time.Duration
	output int64 // bytes written: the file, directory or stored object
	rss    int64 // the worker's peak RSS (capsule rows)
	anon   int64 // the worker's peak anonymous RSS (capsule rows)
	// cpu is the tool's or the worker's (with its pg_dump or
	// pg_restore); s3 is versitygw's. The server's is not measured: its
	// sessions end, and autovacuum runs, after the client has.
	cpu, s3 time.Duration
	// load is the 1-minute load average as the step began: the machine
	// is shared, and a ratio means little beside a busy neighbour.
	load string
}

// step is one line of the table: the fastest of its runs.
type step struct {
	name string
	measurement
	done bool
}

type sizeResult struct {
	db    *dbInfo
	raw   int64 // the uncompressed archive's bytes (pg_dump -Fc -Z0)
	runs  int
	steps []*step
}

func (r *sizeResult) get(name string) *step {
	for _, s := range r.steps {
		if s.name == name {
			return s
		}
	}
	s := &step{name: name}
	r.steps = append(r.steps, s)
	return s
}

// record keeps the fastest of the runs of a step, and the highest RSS.
func (r *sizeResult) record(name string, m measurement) {
	s := r.get(name)
	rss, anon := max(s.rss, m.rss), max(s.anon, m.anon)
	if !s.done || m.wall < s.wall {
		s.measurement = m
	}
	s.rss, s.anon = rss, anon
	s.done = true
}

// run times a command.
func (b *bench) run(ctx context.Context, c benchkit.Command) (measurement, error) {
	load := load1()
	t, err := benchkit.Time(ctx, c)
	return measurement{wall: t.Wall, cpu: t.CPU, load: load}, err
}

// load1 is the 1-minute load average.
func load1() string { return strings.Fields(benchkit.LoadAvg() + " ?")[0] }

// capsuleRun runs a request through a worker process.
func (b *bench) capsuleRun(ctx context.Context, req *requests.Request, level string) (measurement, *benchkit.Run, error) {
	load := load1()
	out, err := b.capsule.Run(ctx, req, level)
	if err != nil {
		return measurement{}, nil, err
	}
	m := measurement{wall: out.Wall, rss: out.PeakRSS, anon: out.PeakAnon, cpu: out.CPU, s3: out.S3CPU, load: load}
	if req.Kind == requests.KindBackup {
		m.output = out.Result.StoredBytes
	}
	return m, out, nil
}

func (b *bench) measure(ctx context.Context, db *dbInfo) (*sizeResult, error) {
	r := &sizeResult{db: db, runs: b.runs}
	env := b.toolEnv()
	file := filepath.Join(b.work, "dump.fc")
	dir := filepath.Join(b.work, "dump.dir")
	zst := filepath.Join(b.work, "dump.fc.zst")
	z0 := filepath.Join(b.work, "dump-z0.fc")
	defer func() {
		os.Remove(z0)
		os.Remove(file)
		os.Remove(zst)
		os.RemoveAll(dir)
	}()
	src := "pg-" + strings.TrimPrefix(db.Name, "capsule_bench_")
	stream := b.source(capsuleTarget)
	stream["restoreJobs"] = 1
	b.capsule.Sources = map[string]map[string]any{src: b.source(db.Name), "pg-restore": b.source(capsuleTarget), "pg-restore-stream": stream}
	for _, s := range b.capsule.Sources {
		s["engine"] = "postgres"
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	say := func(what string) { fmt.Fprintf(b.progress, "%s: %s\n", db.Name, what) }

	// The warm-up also writes the uncompressed archive that a restore
	// row pipes into pg_restore, as capsule's engine does.
	say("warm-up: pg_dump -Fc -Z0 -f Z0FILE")
	if _, err := benchkit.Time(ctx, benchkit.Command{Name: "pg_dump", Args: []string{"-Fc", "-Z0", "-f", z0, "-d", db.Name}, Env: env}); err != nil {
		return nil, err
	}
	_, zstdErr := exec.LookPath("zstd")
	var backupID, sealedID string
	for run := 1; run <= b.runs; run++ {
		say(fmt.Sprintf("run %d of %d: %s", run, b.runs, stepZ0))
		m, err := b.run(ctx, benchkit.Command{Name: "pg_dump", Args: []string{"-Fc", "-Z0", "-d", db.Name}, Env: env, Stdout: devnull})
		if err != nil {
			return nil, err
		}
		r.record(stepZ0, m)

		say(stepFc)
		m, err = b.run(ctx, benchkit.Command{Name: "pg_dump", Args: []string{"-Fc", "-f", file, "-d", db.Name}, Env: env})
		if err != nil {
			return nil, err
		}
		m.output = fileSize(file)
		r.record(stepFc, m)

		if zstdErr == nil {
			say(stepZstd)
			script := fmt.Sprintf("pg_dump -Fc -Z0 -d %s | zstd -q -T2 -3 -f -o %s", benchkit.ShellQuote(db.Name), benchkit.ShellQuote(zst))
			m, err = b.run(ctx, benchkit.Command{Name: script, Shell: true, Env: env})
			if err != nil {
				return nil, err
			}
			m.output = fileSize(zst)
			r.record(stepZstd, m)
			os.Remove(zst)
		}

		for i, level := range b.levels {
			say(backupStep(level))
			req := &requests.Request{Kind: requests.KindBackup, Source: src, Labels: map[string]string{"bench": "pgbench"}}
			m, out, err := b.capsuleRun(ctx, req, level)
			if err != nil {
				return nil, err
			}
			r.record(backupStep(level), m)
			r.raw = out.Result.Bytes
			if i == 0 {
				backupID = req.ID
			}
		}
		if b.encryption != nil {
			say(backupStep(sealed(b.levels[0])))
			req := &requests.Request{Kind: requests.KindBackup, Source: src, Labels: map[string]string{"bench": "pgbench"}}
			b.capsule.Encryption, b.capsule.SigningKey = b.encryption, b.signingKey
			m, _, err := b.capsuleRun(ctx, req, b.levels[0])
			b.capsule.Encryption, b.capsule.SigningKey = nil, ""
			if err != nil {
				return nil, err
			}
			r.record(backupStep(sealed(b.levels[0])), m)
			sealedID = req.ID
		}
		var signedID string
		if b.signingKey != "" {
			say(signed(backupStep(b.levels[0])))
			req := &requests.Request{Kind: requests.KindBackup, Source: src, Labels: map[string]string{"bench": "pgbench"}}
			b.capsule.SigningKey = b.signingKey
			m, _, err := b.capsuleRun(ctx, req, b.levels[0])
			b.capsule.SigningKey = ""
			if err != nil {
				return nil, err
			}
			r.record(signed(backupStep(b.levels[0])), m)
			signedID = req.ID
		}

		say(stepDir)
		if err := os.RemoveAll(dir); err != nil {
			return nil, err
		}
		m, err = b.run(ctx, benchkit.Command{Name: "pg_dump", Args: []string{"-Fd", "-j2", "-f", dir, "-d", db.Name}, Env: env})
		if err != nil {
			return nil, err
		}
		m.output = dirSize(dir)
		r.record(stepDir, m)

		for _, rs := range []struct {
			name, analyzed string
			cmd            benchkit.Command
		}{
			{stepRestore, stepRestoreAn, benchkit.Command{Name: "pg_restore", Args: []string{"--exit-on-error", "-d", pgRestoreTarget, file}}},
			{"", stepPipeAn, benchkit.Command{Shell: true, Name: fmt.Sprintf("cat %s | pg_restore --exit-on-error -d %s", benchkit.ShellQuote(z0), pgRestoreTarget)}},
			{stepRestJ2, "", benchkit.Command{Name: "pg_restore", Args: []string{"--exit-on-error", "-j2", "-d", pgRestoreTarget, file}}},
			{stepRestDir, "", benchkit.Command{Name: "pg_restore", Args: []string{"--exit-on-error", "-j2", "-d", pgRestoreTarget, dir}}},
		} {
			say(cmp.Or(rs.name, rs.analyzed))
			if err := b.dropDB(ctx, pgRestoreTarget); err != nil {
				return nil, err
			}
			if _, err := b.admin.Exec(ctx, `CREATE DATABASE `+pgRestoreTarget); err != nil {
				return nil, err
			}
			rs.cmd.Env = env
			m, err := b.run(ctx, rs.cmd)
			if err != nil {
				return nil, err
			}
			if rs.name != "" {
				r.record(rs.name, m)
			}
			if rs.analyzed != "" {
				a, err := b.analyze(ctx, pgRestoreTarget)
				if err != nil {
					return nil, err
				}
				m.wall += a
				r.record(rs.analyzed, m)
			}
			if err := b.checkRestored(ctx, pgRestoreTarget, db.Counts); err != nil {
				return nil, err
			}
			if err := b.dropDB(ctx, pgRestoreTarget); err != nil {
				return nil, err
			}
		}

		restores := []struct{ name, target, key, backup string }{
			{streamStep(b.levels[0]), "pg-restore-stream", "", backupID},
			{restoreStep(b.levels[0]), "pg-restore", "", backupID},
		}
		if sealedID != "" {
			restores = append(restores, struct{ name, target, key, backup string }{restoreStep(sealed(b.levels[0])), "pg-restore", b.signingKey, sealedID})
		}
		if signedID != "" {
			restores = append(restores, struct{ name, target, key, backup string }{signed(restoreStep(b.levels[0])), "pg-restore", b.signingKey, signedID})
		}
		for _, rs := range restores {
			say(rs.name)
			if err := b.dropLike(ctx, capsuleTarget); err != nil {
				return nil, err
			}
			req := &requests.Request{Kind: requests.KindRestore, BackupID: rs.backup, Target: rs.target, DropPrevious: true}
			if rs.backup == sealedID {
				b.capsule.Encryption = b.encryption
			}
			b.capsule.SigningKey = rs.key
			m, _, err = b.capsuleRun(ctx, req, b.levels[0])
			b.capsule.Encryption = nil
			b.capsule.SigningKey = ""
			if err != nil {
				return nil, err
			}
			r.record(rs.name, m)
			if err := b.checkRestored(ctx, capsuleTarget, db.Counts); err != nil {
				return nil, err
			}
			if err := b.dropLike(ctx, capsuleTarget); err != nil {
				return nil, err
			}
		}
	}
	return r, nil
}

func (r *sizeResult) print(w io.Writer, levels []string) {
	fmt.Fprintf(w, "\n%s: %s on disk (pg_database_size), uncompressed archive (pg_dump -Fc -Z0) %s", r.db.Name, gb(r.db.Size), gb(r.raw))
	if r.db.Built {
		fmt.Fprintf(w, "; built in %s", r.db.BuildTime.Round(time.Second))
	}
	fmt.Fprintln(w)
	backupBase, restoreBase := r.get(stepFc), r.get(stepRestore)
	secs := func(d time.Duration) string {
		if d <= 0 {
			return ""
		}
		return fmt.Sprintf("%.1f", d.Seconds())
	}
	t := benchkit.NewTable("step", "wall", "archive MB/s", "output", "ratio", "wall/base", "CPU s: client", "S3", "worker peak RSS", "anon", "load")
	for _, s := range r.steps {
		base := backupBase
		if strings.Contains(s.name, "restore") {
			base = restoreBase
		}
		out, ratio, rss, anon := "", "", "", ""
		if s.output > 0 {
			out = benchkit.MB(s.output)
			ratio = benchkit.Ratio(float64(r.raw), float64(s.output))
		}
		if s.rss > 0 {
			rss = benchkit.MiB(s.rss)
		}
		if s.anon > 0 {
			anon = benchkit.MiB(s.anon)
		}
		t.Add(s.name, benchkit.Secs(s.wall), benchkit.Rate(r.raw, s.wall), out, ratio,
			benchkit.Ratio(s.wall.Seconds(), base.wall.Seconds()), secs(s.cpu), secs(s.s3), rss, anon, s.load)
	}
	t.Print(w)
	fmt.Fprintf(w, "base: %s for dumps, %s for restores; archive MB/s: the uncompressed archive over the wall time;\n", stepFc, stepRestore)
	fmt.Fprintln(w, "ratio: the uncompressed archive over the output. capsule rows: a `capsule worker --once` process from")
	fmt.Fprintln(w, "start to exit (start-up, claim, the work, commit), its peak RSS its own VmHWM (not pg_dump's/pg_restore's),")
	fmt.Fprintln(w, "anon the highest RssAnon sampled every 10 ms (the RSS less the worker binary's own file pages).")
	fmt.Fprintln(w, "CPU s: client is the tool's, or the worker's with its pg_dump/pg_restore; S3 is versitygw's; the server's")
	fmt.Fprintln(w, "is not included. load: the 1-minute load average as the step began.")
	if r.runs > 1 {
		fmt.Fprintf(w, "fastest of %d runs per step\n", r.runs)
	}

	cb, cr := r.get(backupStep(levels[0])), r.get(restoreStep(levels[0]))
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	zstd, dir := r.get(stepZstd), r.get(stepRestDir)
	fmt.Fprintf(w, "targets (%s):\n", levels[0])
	fmt.Fprintf(w, "  backup at most 0.45× pg_dump -Fc -f FILE:        %s vs %s (%s)  %s\n", benchkit.Secs(cb.wall), benchkit.Secs(backupBase.wall),
		benchkit.Ratio(cb.wall.Seconds(), backupBase.wall.Seconds()), verdict(cb.wall.Seconds() <= 0.45*backupBase.wall.Seconds()))
	fmt.Fprintf(w, "  stored no larger than that file:                 %s vs %s  %s\n", benchkit.MB(cb.output), benchkit.MB(backupBase.output), verdict(cb.output <= backupBase.output))
	if zstd.done {
		fmt.Fprintf(w, "  backup no slower than %s:  %s vs %s (%s)  %s\n", stepZstd, benchkit.Secs(cb.wall), benchkit.Secs(zstd.wall),
			benchkit.Ratio(cb.wall.Seconds(), zstd.wall.Seconds()), verdict(cb.wall <= zstd.wall))
	}
	fmt.Fprintf(w, "  restore no slower than %s:    %s vs %s (%s)  %s\n", stepRestDir, benchkit.Secs(cr.wall), benchkit.Secs(dir.wall),
		benchkit.Ratio(cr.wall.Seconds(), dir.wall.Seconds()), verdict(cr.wall <= dir.wall))
	fmt.Fprintf(w, "  worker peak RSS at most 100 MiB:                 backup %s, restore %s  %s (anon: backup %s, restore %s)\n", benchkit.MiB(cb.rss), benchkit.MiB(cr.rss),
		verdict(max(cb.rss, cr.rss) <= 100<<20), benchkit.MiB(cb.anon), benchkit.MiB(cr.anon))
	if eb, er := r.get(backupStep(sealed(levels[0]))), r.get(restoreStep(sealed(levels[0]))); eb.done && er.done {
		fmt.Fprintf(w, "  encrypted backup within 5 %% of plain:       %s vs %s (%s)  %s\n", benchkit.Secs(eb.wall), benchkit.Secs(cb.wall),
			benchkit.Ratio(eb.wall.Seconds(), cb.wall.Seconds()), verdict(eb.wall.Seconds() <= 1.05*cb.wall.Seconds()))
		fmt.Fprintf(w, "  encrypted restore within 5 %% of plain:      %s vs %s (%s)  %s\n", benchkit.Secs(er.wall), benchkit.Secs(cr.wall),
			benchkit.Ratio(er.wall.Seconds(), cr.wall.Seconds()), verdict(er.wall.Seconds() <= 1.05*cr.wall.Seconds()))
	}
	// -sign: issue 18's target, signing within 5 % of the wall time.
	for _, pair := range [][2]*step{{cb, r.find(signed(backupStep(levels[0])))}, {cr, r.find(signed(restoreStep(levels[0])))}} {
		plain, sig := pair[0], pair[1]
		if sig == nil {
			continue
		}
		fmt.Fprintf(w, "  %-43s %s vs %s (%+.1f%%)  %s\n", sig.name+" within 5%:", benchkit.Secs(sig.wall), benchkit.Secs(plain.wall),
			100*(sig.wall.Seconds()/plain.wall.Seconds()-1), verdict(sig.wall.Seconds() <= 1.05*plain.wall.Seconds()))
	}
}

// find returns the step of that name, or nil when it was not measured.
func (r *sizeResult) find(name string) *step {
	for _, s := range r.steps {
		if s.name == name && s.done {
			return s
		}
	}
	return nil
}
