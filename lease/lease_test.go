package lease_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/lease"
)

type body struct {
	Holder         string `json:"holder"`
	Attempt        int    `json:"attempt"`
	Handbacks      int    `json:"handbacks"`
	DurationMillis int64  `json:"durationMillis"`
	Released       bool   `json:"released,omitempty"`
	Renewals       int    `json:"renewals"`
	At             time.Time
}

func claim(b bucket.Bucket, holder string) lease.Claim {
	return lease.Claim{
		Bucket: b, Key: "locks/job.json", Holder: holder, Length: lease.MinLength, Limit: 1 << 20,
		Encode: func(w lease.Write) []byte {
			data, _ := json.Marshal(body{w.Holder, w.Attempt, w.Handbacks, w.Length.Milliseconds(), w.Released, w.Renewals, w.At})
			return data
		},
	}
}

// age sets the lease's last write d ago by the bucket's clock (the
// directory's modification times).
func age(t *testing.T, dir string, d time.Duration) {
	t.Helper()
	old := time.Now().Add(-d)
	if err := os.Chtimes(filepath.Join(dir, "locks/job.json"), old, old); err != nil {
		t.Fatal(err)
	}
}

// TestProtocol walks one lease through claim, refusal, expiry, takeover,
// loss, hand-back and the fence.
func TestProtocol(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	b, err := fs.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, _, err := lease.Acquire(ctx, claim(b, "a"))
	if err != nil || a == nil || a.Attempt() != 1 {
		t.Fatalf("first claim: %v %v", a, err)
	}
	if l, st, err := lease.Acquire(ctx, claim(b, "b")); l != nil || err != nil || st.Holder != "a" || !st.Held() {
		t.Fatalf("claim of a held lease: %v %+v %v", l, st, err)
	}
	if err := a.Renew(ctx, nil); err != nil || !a.Valid() {
		t.Fatalf("renewal: %v", err)
	}
	// Expired by the bucket's clock: taken over as attempt 2.
	age(t, dir, time.Minute)
	bl, st, err := lease.Acquire(ctx, claim(b, "b"))
	if err != nil || bl == nil || bl.Attempt() != 2 || st.Holder != "a" {
		t.Fatalf("takeover: %v %+v %v", bl, st, err)
	}
	// The old holder's fence fails and says why.
	if err := a.Renew(ctx, nil); !errors.Is(err, lease.ErrLost) {
		t.Fatalf("renewal after a takeover: %v, want ErrLost", err)
	}
	if err := a.Keep(ctx, lease.Keeping{}); !errors.Is(err, lease.ErrLost) {
		t.Fatalf("keeping a lost lease: %v, want ErrLost", err)
	}
	// Handed back: the next claim takes it at once, and counts it.
	if err := bl.Release(ctx, nil); err != nil {
		t.Fatal(err)
	}
	cl, _, err := lease.Acquire(ctx, claim(b, "c"))
	if err != nil || cl == nil || cl.Attempt() != 3 || cl.Handbacks() != 1 {
		t.Fatalf("claim after a hand-back: %v %v", cl, err)
	}
	// A damaged lease is judged by the length the reader is told.
	if _, err := bucket.PutBytes(ctx, b, "locks/job.json", []byte("{damaged"), bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	age(t, dir, 10*time.Second)
	st, err = lease.Read(ctx, b, "locks/job.json", 1<<20, time.Minute)
	if err != nil || !st.Damaged || !st.Held() {
		t.Fatalf("a damaged lease 10s old, judged by 1m: %+v %v", st, err)
	}
	st, err = lease.Read(ctx, b, "locks/job.json", 1<<20, 5*time.Second)
	if err != nil || st.Held() {
		t.Fatalf("a damaged lease 10s old, judged by 5s: %+v %v", st, err)
	}
}

func TestValidate(t *testing.T) {
	if err := lease.Validate("worker.lease", time.Second); err == nil || !strings.Contains(err.Error(), "worker.lease") {
		t.Errorf("1s: %v, want an error naming the setting", err)
	}
	if err := lease.Validate("worker.lease", lease.MinLength); err != nil {
		t.Error(err)
	}
	if _, _, err := lease.Acquire(t.Context(), lease.Claim{Length: time.Millisecond * 30}); err == nil {
		t.Error("a 30ms lease was acquired")
	}
}
