package metrics_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/sshsig/sshsigtest"
	"github.com/cnvrg/capsule/metrics"
	"github.com/cnvrg/capsule/requests"
)

// TestUnsignedBackupsSilenceNoAlert: a well-formed backup planted an hour
// ago without a signature, beside a signed one 30 hours old, moves no
// gauge where the worker trusts its signing key: the "no good backup in
// 26h" alert still fires.
func TestUnsignedBackupsSilenceNoAlert(t *testing.T) {
	fb, err := fs.New(filepath.Join(t.TempDir(), "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	b := bucket.Prefixed(fb, "capsule/")
	ctx := context.Background()
	signer := index.NewSigner(sshsigtest.Key(t))
	t0 := time.Now().UTC().Add(-30 * time.Hour).Truncate(time.Second)
	mk := func(id string, finished time.Time) *index.BackupIndex {
		return &index.BackupIndex{
			APIVersion: requests.APIVersion, Kind: index.KindIndex, BackupID: id, RequestID: id,
			Cluster: "default", Source: "cnvrg/pg", Engine: "files", Format: "tar", CapsuleVersion: "test",
			Status: requests.StatusSucceeded, Attempt: 1, StartedAt: finished.Add(-time.Minute), FinishedAt: finished,
			Artifacts: []index.Artifact{},
		}
	}
	if err := index.WriteSigned(ctx, b, mk("b1", t0), signer); err != nil {
		t.Fatal(err)
	}
	if err := index.Write(ctx, b, mk("forged", time.Now().UTC().Add(-time.Hour).Truncate(time.Second))); err != nil {
		t.Fatal(err)
	}
	r := metrics.New(metrics.Options{NoRuntime: true})
	if _, err := r.LoadTrustedCatalog(ctx, b, index.NewTrust([]ssh.PublicKey{signer.PublicKey()}, false)); err != nil {
		t.Fatal(err)
	}
	s := scrapes{scrape(t, r.Handler())}
	if got := s.max(metrics.LastBackupSuccess, L{"cluster": "default", "source": "cnvrg/pg"}); got != unix(t0) {
		t.Errorf("last backup success = %v, want %v (the signed backup, 30h ago)", got, unix(t0))
	}
}
