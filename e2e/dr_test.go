package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/internal/s3test"
	"github.com/jackc/pgx/v5"
)

// runbookStep is one step of docs/disaster-recovery.md: its number, title
// and the text of its sh block.
type runbookStep struct {
	n     int
	title string
	sh    string
}

func readRunbook(t *testing.T) []runbookStep {
	t.Helper()
	data, err := os.ReadFile("../docs/disaster-recovery.md")
	if err != nil {
		t.Fatal(err)
	}
	heading := regexp.MustCompile(`(?m)^## (\d+)\. (.+)$`)
	block := regexp.MustCompile("(?s)```sh\n(.*?)```")
	locs := heading.FindAllStringSubmatchIndex(string(data), -1)
	var steps []runbookStep
	for i, l := range locs {
		end := len(data)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		n, _ := strconv.Atoi(string(data[l[2]:l[3]]))
		body := string(data[l[1]:end])
		blocks := block.FindAllStringSubmatch(body, -1)
		s := runbookStep{n: n, title: string(data[l[4]:l[5]])}
		switch len(blocks) {
		case 0:
		case 1:
			s.sh = blocks[0][1]
		default:
			t.Fatalf("runbook step %d has %d command blocks, want at most one", n, len(blocks))
		}
		if n != i+1 {
			t.Fatalf("runbook step %q is number %d, want %d", s.title, n, i+1)
		}
		steps = append(steps, s)
	}
	return steps
}

// exportsOf returns the names a block of export lines sets; false when a
// line of it is anything else.
func exportsOf(sh string) ([]string, bool) {
	var names []string
	assign := regexp.MustCompile(`([A-Z_][A-Z0-9_]*)=('[^']*'|"[^"]*"|\S+)`)
	for _, line := range strings.Split(strings.TrimSpace(sh), "\n") {
		rest, ok := strings.CutPrefix(line, "export ")
		if !ok {
			return nil, false
		}
		for _, m := range assign.FindAllStringSubmatch(rest, -1) {
			names = append(names, m[1])
		}
	}
	slices.Sort(names)
	return names, true
}

// TestDisasterRecoveryRunbook follows docs/disaster-recovery.md: a worker
// of the lost cluster backs a PostgreSQL database up into a bucket; the
// cluster and its database are gone; then steps 3 to 8 of the runbook run
// as written, in one bash, with the real capsule binary, psql and the
// real S3 server and PostgreSQL, the values a reader fills in (steps 2
// and 4) set to the test's. The restored database has every row.
func TestDisasterRecoveryRunbook(t *testing.T) {
	pg := needPostgres(t)
	if _, err := exec.LookPath("psql"); err != nil {
		t.Skip("no psql: run scripts/services.sh")
	}
	steps := readRunbook(t)
	if len(steps) < 8 {
		t.Fatalf("the runbook has %d steps, want at least 8", len(steps))
	}

	// The lost cluster: its worker backed cnvrg/pg up.
	srv := s3test.Shared(t)
	bucketURL := srv.URL(srv.NewBucket(t), "capsule/")
	dir := t.TempDir()
	oldDB := pg.prefix + "_production"
	pg.createSource(oldDB, 300)
	want := pg.digest(oldDB)
	const cluster, source = "cnvrg/cnvrg-app", "cnvrg/pg"
	oldConfig := filepath.Join(dir, "old.yaml")
	mustDo(t, os.WriteFile(oldConfig, []byte(fmt.Sprintf("cluster: %s\nsources:\n  %s:\n    engine: postgres\n    url: %s\n", cluster, source, pg.url(oldDB))), 0o600))
	oldEnv := append(os.Environ(), srv.Env()...)
	oldEnv = append(oldEnv, "CAPSULE_BUCKET="+bucketURL, "CAPSULE_CONFIG="+oldConfig)
	capsuleIn := capsuleWith(t, oldEnv)
	backupID := capsuleIn("backup", source)
	capsuleIn("worker", "--once")
	capsuleIn("status", backupID, "--wait")
	// The cluster is gone, and its database with it.
	pg.exec("postgres", "DROP DATABASE "+oldDB+" WITH (FORCE)")

	// What a reader fills in: the bucket, the keys, the new server (step
	// 2), and the backup they picked (step 4).
	newRole, newDB := pg.prefix+"_dr", pg.prefix+"_restored"
	t.Cleanup(func() {
		pg.dropAll()
		ctx := context.Background()
		if conn, err := pgx.Connect(ctx, pgURL+"postgres"); err == nil {
			_, _ = conn.Exec(ctx, "DROP ROLE IF EXISTS "+newRole)
			_ = conn.Close(ctx)
		}
	})
	pwFile := filepath.Join(dir, "pg-password")
	mustDo(t, os.WriteFile(pwFile, []byte("pw-"+randHex(8)), 0o600))
	filled := map[int]map[string]string{
		2: {
			"CAPSULE_BUCKET": bucketURL, "PGADMIN_URL": pgURL + "postgres", "PGPASSWORD": "unused-with-trust",
			"PG_HOST": "127.0.0.1", "PG_ROLE": newRole, "PG_DB": newDB, "PG_PASSWORD_FILE": pwFile,
		},
		4: {"CLUSTER": cluster, "SOURCE": source, "BACKUP_ID": backupID},
	}
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "AWS_ACCESS_KEY_ID") || strings.HasPrefix(k, "AWS_SECRET_ACCESS_KEY") {
			filled[2][k] = v
		}
	}

	var script strings.Builder
	script.WriteString("set -euo pipefail\n")
	for _, s := range steps[1:8] {
		sh := s.sh
		if vals, ok := filled[s.n]; ok {
			sh = fillExports(t, fmt.Sprintf("runbook step %d", s.n), sh, vals)
		}
		fmt.Fprintf(&script, "echo '== step %d'\n%s", s.n, sh)
	}
	cmd := exec.Command("bash", "-c", script.String())
	cmd.Dir = dir
	// A fresh shell: nothing of the test's environment but where the
	// programs are (capsule first).
	cmd.Env = []string{"PATH=" + filepath.Dir(binary) + ":" + os.Getenv("PATH"), "HOME=" + dir, "LANG=C.UTF-8"}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	t.Logf("the runbook's output:\n%s", out.String())
	if err != nil {
		t.Fatalf("the runbook failed: %v\n%s", err, tail(errb.Bytes(), 4000))
	}

	stepOut := map[string]string{}
	parts := regexp.MustCompile(`(?m)^== step (\d+)\n`).Split(out.String(), -1)
	for i, m := range regexp.MustCompile(`(?m)^== step (\d+)\n`).FindAllStringSubmatch(out.String(), -1) {
		stepOut[m[1]] = parts[i+1]
	}
	if !strings.Contains(stepOut["3"], backupID) || !strings.Contains(stepOut["3"], cluster) {
		t.Errorf("step 3 (capsule ls --all-clusters) does not show the backup %s of %s:\n%s", backupID, cluster, stepOut["3"])
	}
	if !strings.Contains(stepOut["4"], `"dumpBytes"`) || !strings.Contains(stepOut["4"], `"rows"`) {
		t.Errorf("step 4 (capsule describe) shows no dumpBytes or rows:\n%s", stepOut["4"])
	}
	if got := pg.digest(newDB); got != want {
		t.Errorf("the restored database differs from the lost one:\n got %s\nwant %s", got, want)
	}
	// Step 8 prints every table's row count: those of the lost database.
	for _, tb := range strings.Split(strings.TrimSuffix(want, ";"), ";") {
		f := strings.Split(tb, ":")
		if line := "public." + f[0] + " " + f[1]; !strings.Contains(stepOut["8"], line) {
			t.Errorf("step 8 does not print %q:\n%s", line, stepOut["8"])
		}
	}
	var owner string
	conn, err := pgx.Connect(context.Background(), pgURL+"postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(context.Background(), `SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1`, newDB).Scan(&owner); err != nil {
		t.Fatal(err)
	}
	if owner != newRole {
		t.Errorf("the restored database is owned by %s, want the runbook's role %s", owner, newRole)
	}
}

// fillExports replaces the export lines that open a documented block
// (the reader's values) with the same names set to the test's values;
// what names them in failures.
func fillExports(t *testing.T, what, sh string, vals map[string]string) string {
	t.Helper()
	lines := strings.SplitAfter(sh, "\n")
	var exports, rest []string
	for i, l := range lines {
		if !strings.HasPrefix(l, "export ") {
			rest = lines[i:]
			break
		}
		exports = append(exports, l)
	}
	names, ok := exportsOf(strings.Join(exports, ""))
	if !ok || !slices.Equal(names, keysOfStr(vals)) {
		t.Fatalf("%s sets %v, the test fills in %v", what, names, keysOfStr(vals))
	}
	var b strings.Builder
	for _, k := range keysOfStr(vals) {
		fmt.Fprintf(&b, "export %s=%s\n", k, shellQuote(vals[k]))
	}
	return b.String() + strings.Join(rest, "")
}

// capsuleWith returns a function that runs the capsule binary with env
// and returns its trimmed stdout, failing the test when it fails.
func capsuleWith(t *testing.T, env []string) func(args ...string) string {
	return func(args ...string) string {
		t.Helper()
		cmd := exec.Command(binary, args...)
		cmd.Env = env
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("capsule %s: %v\n%s", strings.Join(args, " "), err, errb.String())
		}
		return strings.TrimSpace(out.String())
	}
}

func keysOfStr(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
