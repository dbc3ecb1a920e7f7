package index_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/sshsig/sshsigtest"
)

// BenchmarkSigning measures what signing adds to a backup's commit (the
// signature and its object, after the index) and to finding a backup for
// a restore (reading and checking the signature), on a local-directory
// bucket: a constant per backup, whatever its size.
func BenchmarkSigning(b *testing.B) {
	ctx := context.Background()
	signer := index.NewSigner(sshsigtest.Key(b))
	trust := index.NewTrust([]ssh.PublicKey{signer.PublicKey()}, false)
	t0 := time.Now().UTC().Add(-time.Hour)
	for _, c := range []struct {
		name  string
		s     *index.Signer
		trust *index.Trust
	}{{"unsigned", nil, nil}, {"signed", signer, trust}} {
		fb, err := fs.New(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		bkt := bucket.Prefixed(fb, "capsule/")
		n := 0
		b.Run("commit/"+c.name, func(b *testing.B) {
			for range b.N {
				x := idx("c", "pg", fmt.Sprintf("b%d", n), t0)
				n++
				if err := index.WriteSigned(ctx, bkt, x, c.s); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("find/"+c.name, func(b *testing.B) {
			for range b.N {
				e, err := index.FindTrusted(ctx, bkt, "b0", c.trust)
				if err != nil || !e.Trusted() {
					b.Fatal(err, e.Signature)
				}
			}
		})
	}
}
