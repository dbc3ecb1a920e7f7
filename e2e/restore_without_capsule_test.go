package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/bucketurl"
	"github.com/cnvrg/capsule/crypt/crypttest"
	"github.com/cnvrg/capsule/internal/s3test"
	"github.com/sirupsen/logrus"
)

// docSection is one "## N. Title" step of docs/restore-without-capsule.md
// with its sh block, or one "### Title" part of the last step.
type docSection struct {
	n     int
	title string
	sh    string
}

// readNoCapsuleDoc returns the document's numbered steps and the parts of
// its last step ("### Title"), each with at most one sh block.
func readNoCapsuleDoc(t *testing.T) (steps []docSection, parts map[string]docSection) {
	t.Helper()
	data, err := os.ReadFile("../docs/restore-without-capsule.md")
	if err != nil {
		t.Fatal(err)
	}
	heading := regexp.MustCompile(`(?m)^(##|###) (?:(\d+)\. )?(.+)$`)
	block := regexp.MustCompile("(?s)```sh\n(.*?)```")
	locs := heading.FindAllSubmatchIndex(data, -1)
	parts = map[string]docSection{}
	for i, l := range locs {
		end := len(data)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		blocks := block.FindAllSubmatch(data[l[1]:end], -1)
		s := docSection{title: string(data[l[6]:l[7]])}
		if len(blocks) > 1 {
			t.Fatalf("section %q has %d command blocks, want at most one", s.title, len(blocks))
		}
		if len(blocks) == 1 {
			s.sh = string(blocks[0][1])
		}
		if string(data[l[2]:l[3]]) == "###" {
			parts[s.title] = s
			continue
		}
		s.n, _ = strconv.Atoi(string(data[l[4]:l[5]]))
		if s.n != len(steps)+1 {
			t.Fatalf("step %q is number %d, want %d", s.title, s.n, len(steps)+1)
		}
		steps = append(steps, s)
	}
	return steps, parts
}

// TestRestoreWithoutCapsule follows docs/restore-without-capsule.md
// literally: capsule backs an encrypted PostgreSQL database and an
// encrypted directory up into a real S3 server (versitygw); no stored
// object holds any of their data; then the document's steps 2 to 7 and
// its PostgreSQL and Files parts run as written in one bash with no
// capsule on the PATH, the S3 client being the AWS CLI, the values a
// reader fills in (the export lines of steps 2 and 4 and of the parts)
// set to the test's; the restored database and directory equal the
// originals.
func TestRestoreWithoutCapsule(t *testing.T) {
	pg := needPostgres(t)
	tools := os.Getenv("PATH")
	if abs, err := filepath.Abs("../.tools/bin"); err == nil {
		tools = abs + ":" + tools
	}
	for _, tool := range []string{"aws", "jq", "age", "zstd", "sha256sum", "tar", "createdb", "pg_restore"} {
		if _, err := lookPathIn(tool, tools); err != nil {
			t.Skipf("%s is not installed (age: scripts/install-tools.sh; aws: the AWS CLI; the rest: scripts/services.sh)", tool)
		}
	}
	steps, parts := readNoCapsuleDoc(t)
	if len(steps) != 8 || parts["PostgreSQL: `pg_dump-custom.v1`"].sh == "" || parts["Files: `tar/v1`"].sh == "" {
		t.Fatalf("the document has %d steps and parts %v; want 8 steps and a PostgreSQL and a Files block", len(steps), keysOfSections(parts))
	}
	if !strings.Contains(steps[4].title, "Check the signature") {
		t.Errorf("step 5 is %q, want the section \"Check the signature\"", steps[4].title)
	}

	// capsule's side: an encrypted backup of each.
	srv := s3test.Shared(t)
	bucketName := srv.NewBucket(t)
	const prefix = "capsule/"
	dir := t.TempDir()
	db := pg.prefix + "_src"
	pg.createSource(db, 200)
	const marker = "nocapsule-marker-3b9e"
	pg.exec(db, "SET ROLE "+pg.role()+"; CREATE TABLE secrets(v text); INSERT INTO secrets VALUES ('"+marker+"')")
	wantDB := pg.digest(db)
	data := filepath.Join(dir, "data")
	mustDo(t, os.MkdirAll(filepath.Join(data, "nested", "deeper"), 0o750))
	blob := make([]byte, 1<<20)
	_, _ = rand.Read(blob)
	mustDo(t, os.WriteFile(filepath.Join(data, "blob.bin"), blob, 0o640))
	mustDo(t, os.WriteFile(filepath.Join(data, "nested", "deeper", "notes.txt"), bytes.Repeat([]byte(marker+"\n"), 1000), 0o600))
	mustDo(t, os.Symlink("nested/deeper/notes.txt", filepath.Join(data, "link")))
	old := time.Date(2020, 2, 29, 12, 0, 0, 123456789, time.UTC)
	mustDo(t, os.Chtimes(filepath.Join(data, "blob.bin"), old, old))
	wantTree := treeDigest(t, data)

	key := crypttest.X25519(t)
	idFile := filepath.Join(dir, "age-identity.txt")
	mustDo(t, os.WriteFile(idFile, key.Identity, 0o600))
	config := filepath.Join(dir, "capsule.yaml")
	mustDo(t, os.WriteFile(config, []byte(fmt.Sprintf(`cluster: cnvrg/app
worker:
  encryption:
    recipients: [%s]
sources:
  cnvrg/pg:
    engine: postgres
    url: %s
  cnvrg/files:
    engine: files
    path: %s
`, key.Recipient, pg.url(db), data)), 0o600))
	env := append(os.Environ(), srv.Env()...)
	env = append(env, "CAPSULE_BUCKET="+srv.URL(bucketName, prefix), "CAPSULE_CONFIG="+config)
	capsule := capsuleWith(t, env)
	pgBackup := capsule("backup", "cnvrg/pg")
	filesBackup := capsule("backup", "cnvrg/files")
	capsule("worker", "--once", "--unsafe-bucket")
	capsule("status", pgBackup, "--wait")
	capsule("status", filesBackup, "--wait")

	// No stored object reveals the data.
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	b, _, err := bucketurl.Open(context.Background(), srv.URL(bucketName, prefix), logrus.New())
	mustDo(t, err)
	artifacts := 0
	mustDo(t, bucket.Walk(context.Background(), b, "backups/", func(o bucket.ObjectInfo) error {
		body, _, err := bucket.GetBytes(context.Background(), b, o.Key)
		if err != nil {
			return err
		}
		if strings.HasSuffix(o.Key, ".json") {
			return nil
		}
		artifacts++
		for _, known := range []string{marker, "accounts", "notes.txt", "CREATE TABLE"} {
			if bytes.Contains(body, []byte(known)) {
				t.Errorf("stored object %s contains %q", o.Key, known)
			}
		}
		if !bytes.HasPrefix(body, []byte("age-encryption.org/v1\n")) {
			t.Errorf("stored object %s is not an age file", o.Key)
		}
		return nil
	}))
	if artifacts < 2 {
		t.Fatalf("found %d artifacts in the bucket, want at least 2", artifacts)
	}

	restoreDB, restoreDir := pg.prefix+"_nocapsule", filepath.Join(dir, "restored")
	for _, c := range []struct {
		backup, part string
		fill         map[string]string
	}{
		{pgBackup, "PostgreSQL: `pg_dump-custom.v1`", map[string]string{"PGHOST": "127.0.0.1", "PGPORT": "5432", "PGUSER": "postgres", "RESTORE_DB": restoreDB}},
		{filesBackup, "Files: `tar/v1`", map[string]string{"RESTORE_DIR": restoreDir}},
	} {
		fill := map[int]map[string]string{
			2: {"BUCKET": bucketName, "PREFIX": prefix, "AWS_REGION": srv.Region, "AWS_ENDPOINT_URL": srv.Endpoint,
				"AWS_ACCESS_KEY_ID": srv.AccessKey, "AWS_SECRET_ACCESS_KEY": srv.SecretKey, "AGE_IDENTITY": idFile},
			4: {"BACKUP": c.backup},
		}
		var script strings.Builder
		script.WriteString("set -euo pipefail\n")
		for _, s := range steps[1:7] {
			sh := s.sh
			if vals, ok := fill[s.n]; ok {
				sh = fillExports(t, fmt.Sprintf("step %d", s.n), sh, vals)
			}
			fmt.Fprintf(&script, "echo '== step %d'\n%s", s.n, sh)
		}
		fmt.Fprintf(&script, "echo '== step 8: %s'\n%s", c.part, fillExports(t, c.part, parts[c.part].sh, c.fill))
		cmd := exec.Command("bash", "-c", script.String())
		cmd.Dir = dir
		// A fresh shell: no capsule, nothing of the test's environment
		// but where the standard programs are.
		cmd.Env = []string{"PATH=" + tools, "HOME=" + dir, "LANG=C.UTF-8"}
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		t.Logf("the document's output for %s:\n%s", c.part, out.String())
		if err != nil {
			t.Fatalf("the document's commands failed for %s: %v\n%s", c.part, err, tail(errb.Bytes(), 4000))
		}
		for _, w := range []string{c.backup, key.Recipient, `"prefix": "` + prefix + `"`} {
			if !strings.Contains(out.String(), w) {
				t.Errorf("steps 3 and 4 do not show %s", w)
			}
		}
	}
	if got := pg.digest(restoreDB); got != wantDB {
		t.Errorf("the database restored without capsule differs:\n got %s\nwant %s", got, wantDB)
	}
	if got := treeDigest(t, restoreDir); got != wantTree {
		t.Errorf("the directory restored without capsule differs from the original")
	}
}

func lookPathIn(name, path string) (string, error) {
	for _, d := range filepath.SplitList(path) {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

func keysOfSections(m map[string]docSection) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
