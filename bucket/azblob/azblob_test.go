package azblob_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/azblob"
	"github.com/cnvrg/capsule/bucket/buckettest"
	"github.com/cnvrg/capsule/bucket/bucketurl"
	"github.com/cnvrg/capsule/internal/azuritetest"
)

// A real account: the tests that Azurite cannot run (immutability) and
// the conformance suite run there too when these name a container.
//
//	CAPSULE_TEST_AZURE_URL            azblob://CONTAINER/PREFIX?account=NAME, credentials
//	                                  in the environment as bucketurl reads them
//	                                  (AZURE_STORAGE_KEY, AZURE_STORAGE_SAS_TOKEN, ...)
//	CAPSULE_TEST_AZURE_IMMUTABLE_URL  the same for a container with version-level
//	                                  immutability support (TestDeleteRetained);
//	                                  its blobs stay until their policy ends (an hour)
const (
	envURL          = "CAPSULE_TEST_AZURE_URL"
	envImmutableURL = "CAPSULE_TEST_AZURE_IMMUTABLE_URL"
)

func testLogger(t *testing.T) logrus.FieldLogger {
	l := logrus.New()
	l.Out = t.Output()
	l.Level = logrus.DebugLevel
	return l
}

// testBlockSize is the default (as on a real account, opened through
// bucketurl): uploads of tens of MiB stage several blocks, and the
// suite's 12 MiB open uploads (PendingUploads) stage exactly one, before
// Write returns. (AbortUpload cannot stop a block that another writer is
// staging at that moment: Azure has no upload to abort, and such a block
// makes the key pending again.)
const testBlockSize = azblob.DefaultBlockSize

func newBucket(t *testing.T, srv *azuritetest.Server, container string) *azblob.Bucket {
	t.Helper()
	b, err := azblob.New(azblob.Options{
		Container:  container,
		ServiceURL: srv.ServiceURL,
		Account:    srv.Account,
		AccountKey: srv.Key,
		BlockSize:  testBlockSize,
		Log:        testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConformance(t *testing.T) {
	srv := azuritetest.Shared(t)
	name := srv.NewContainer(t)
	buckettest.Run(t, func(t *testing.T) bucket.Bucket { return newBucket(t, srv, name) })
}

// realAccount opens the container that env names, or skips.
func realAccount(t *testing.T, env, why string) bucket.Bucket {
	t.Helper()
	raw := os.Getenv(env)
	if raw == "" {
		t.Skipf("%s; set %s to run it against a real account", why, env)
	}
	b, desc, err := bucketurl.Open(t.Context(), raw, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("real account: %s", desc)
	return b
}

func TestConformanceRealAccount(t *testing.T) {
	b := realAccount(t, envURL, "the conformance suite runs on Azurite")
	buckettest.Run(t, func(t *testing.T) bucket.Bucket { return b })
}

// TestDeleteRetained: a blob written with RetainUntil on a container with
// version-level immutability keeps a locked policy, and its Delete fails
// with bucket.ErrRetained (or, on a versioned account, succeeds and keeps
// the version). Azurite has no immutability policies: see
// TestRetainUntilRefusedByAzurite for what the bucket does there.
func TestDeleteRetained(t *testing.T) {
	b := realAccount(t, envImmutableURL, "Azurite keeps no immutability policy (it accepts x-ms-immutability-policy-* and ignores them)")
	key := "retained-" + time.Now().UTC().Format("20060102T150405.000000000")
	if _, err := bucket.PutBytes(t.Context(), b, key, []byte("x"), bucket.PutOptions{RetainUntil: time.Now().Add(time.Hour)}); err != nil {
		t.Fatalf("put with retention: %v", err)
	}
	err := b.Delete(t.Context(), key)
	switch {
	case errors.Is(err, bucket.ErrRetained):
		if _, err := b.Head(t.Context(), key); err != nil {
			t.Fatalf("the retained blob is gone: %v", err)
		}
	case err == nil:
		t.Logf("delete of a retained blob succeeded: a versioned account keeps the version until its policy ends")
	default:
		t.Fatalf("delete of a retained blob: %v, want ErrRetained", err)
	}
}

// TestRetainUntilRefusedByAzurite: Azurite accepts a write's immutability
// headers and keeps no policy. The bucket must not report such a write as
// done: Put and a committed Upload fail, naming the key, and leave no
// blob behind.
func TestRetainUntilRefusedByAzurite(t *testing.T) {
	srv := azuritetest.Shared(t)
	b := newBucket(t, srv, srv.NewContainer(t))
	until := time.Now().Add(time.Hour)
	_, err := bucket.PutBytes(t.Context(), b, "locked", []byte("x"), bucket.PutOptions{RetainUntil: until, IfNoneMatch: true})
	if err == nil || !strings.Contains(err.Error(), "did not keep it immutable") || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("put with a retention Azurite ignores: %v, want a failure naming the key and the missing retention", err)
	}
	if _, err := b.Head(t.Context(), "locked"); !errors.Is(err, bucket.ErrNotFound) {
		t.Fatalf("after the refused put: %v, want the blob gone", err)
	}
	for _, n := range []int{10, 3*testBlockSize + 5} {
		u, err := b.Upload(t.Context(), "locked-upload", bucket.PutOptions{RetainUntil: until})
		if err != nil {
			t.Fatal(err)
		}
		u.Write(make([]byte, n))
		if _, err := u.Commit(); err == nil || !strings.Contains(err.Error(), "did not keep it immutable") {
			t.Fatalf("upload of %d bytes with a retention Azurite ignores: %v", n, err)
		}
		u.Abort()
		if _, err := b.Head(t.Context(), "locked-upload"); !errors.Is(err, bucket.ErrNotFound) {
			t.Fatalf("after the refused upload of %d bytes: %v, want the blob gone", n, err)
		}
	}
}

// TestCredentials: each way in reaches the container, and the bucket's
// description names the way, never the secret.
func TestCredentials(t *testing.T) {
	srv := azuritetest.Shared(t)
	name := srv.NewContainer(t)
	keyed := newBucket(t, srv, name)
	sasURL, err := keyed.Client().GetSASURL(sas.ContainerPermissions{Read: true, Add: true, Create: true, Write: true, Delete: true, List: true}, time.Now().Add(time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, sasToken, _ := strings.Cut(sasURL, "?")
	for _, c := range []struct {
		name string
		opts azblob.Options
		want string
	}{
		{"connection string", azblob.Options{ConnectionString: srv.ConnectionString()}, "(connection string)"},
		{"account key", azblob.Options{ServiceURL: srv.ServiceURL, Account: srv.Account, AccountKey: srv.Key}, "(account key)"},
		{"sas", azblob.Options{ServiceURL: srv.ServiceURL, SASToken: sasToken}, "(SAS token)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.opts.Container = name
			b, err := azblob.New(c.opts)
			if err != nil {
				t.Fatal(err)
			}
			key := "cred/" + strings.ReplaceAll(c.name, " ", "-")
			if _, err := bucket.PutBytes(t.Context(), b, key, []byte(c.name), bucket.PutOptions{IfNoneMatch: true}); err != nil {
				t.Fatal(err)
			}
			if data, _, err := bucket.GetBytes(t.Context(), keyed, key); err != nil || string(data) != c.name {
				t.Fatalf("read back %q, %v", data, err)
			}
			desc := b.String()
			if !strings.Contains(desc, c.want) || !strings.Contains(desc, name) {
				t.Errorf("description %q, want the container and %q", desc, c.want)
			}
			for _, secret := range []string{srv.Key, "sig="} {
				if strings.Contains(desc, secret) {
					t.Errorf("description %q holds a secret", desc)
				}
			}
		})
	}
}

// TestSASNeverInErrors: a SAS token's signature travels in the URL's
// query, and Go's transport errors quote the URL. A bucket that cannot
// reach its service must fail, and log its retries, without it.
func TestSASNeverInErrors(t *testing.T) {
	srv := azuritetest.Shared(t)
	name := srv.NewContainer(t)
	sasURL, err := newBucket(t, srv, name).Client().GetSASURL(sas.ContainerPermissions{Read: true, List: true}, time.Now().Add(time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, token, _ := strings.Cut(sasURL, "?")
	sig := ""
	for _, kv := range strings.Split(token, "&") {
		if v, ok := strings.CutPrefix(kv, "sig="); ok {
			sig = v
		}
	}
	if sig == "" {
		t.Fatalf("no signature in %s", sasURL)
	}
	var logs bytes.Buffer
	log := logrus.New()
	log.Out = &logs
	// A port nobody listens on: connection refused, retried, then
	// returned.
	b, err := azblob.New(azblob.Options{Container: name, ServiceURL: "http://127.0.0.1:1/" + srv.Account, SASToken: token, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	var herr, lerr error
	var wg sync.WaitGroup
	wg.Go(func() { _, herr = b.Head(t.Context(), "k") })
	wg.Go(func() { _, lerr = b.List(t.Context(), "", bucket.ListOptions{}) })
	wg.Wait()
	for _, e := range []error{herr, lerr} {
		if e == nil || !strings.Contains(e.Error(), "127.0.0.1:1/") || !errors.Is(e, bucket.ErrTransient) {
			t.Fatalf("error %v: want the transport error, marked transient", e)
		}
		if strings.Contains(e.Error(), sig) || strings.Contains(e.Error(), "sig=") {
			t.Errorf("error holds the SAS signature: %v", e)
		}
	}
	if !strings.Contains(logs.String(), "retrying") {
		t.Fatalf("no retry logged:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), sig) || strings.Contains(logs.String(), "sig=") {
		t.Errorf("the log holds the SAS signature:\n%s", logs.String())
	}
}

// TestListStartAfterAcrossPages: StartAfter is exact at every key,
// including one that was never written and one past the end, whatever
// page size: Azure's startFrom is inclusive and the page is asked one
// blob larger.
func TestListStartAfterAcrossPages(t *testing.T) {
	srv := azuritetest.Shared(t)
	b := newBucket(t, srv, srv.NewContainer(t))
	keys := []string{"a/0", "a/1", "a/1/x", "a/1-x", "a/1.x", "a/2", "a/3", "b/0"}
	for _, k := range keys {
		if _, err := bucket.PutBytes(t.Context(), b, k, []byte(k), bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	want := func(after string) []string {
		var out []string
		for _, k := range []string{"a/0", "a/1", "a/1-x", "a/1.x", "a/1/x", "a/2", "a/3"} {
			if k > after {
				out = append(out, k)
			}
		}
		return out
	}
	for _, after := range []string{"", "a/", "a/0", "a/1", "a/1-", "a/1/x", "a/3", "a/4", "0"} {
		for _, limit := range []int{1, 2, 3, 100} {
			var got []string
			cur := after
			for range 20 {
				page, err := b.List(t.Context(), "a/", bucket.ListOptions{StartAfter: cur, Limit: limit})
				if err != nil {
					t.Fatal(err)
				}
				if len(page.Objects) > limit {
					t.Fatalf("after %q limit %d: %d objects", cur, limit, len(page.Objects))
				}
				for _, o := range page.Objects {
					got = append(got, o.Key)
					cur = o.Key
				}
				if !page.Truncated {
					break
				}
			}
			if w := want(after); strings.Join(got, " ") != strings.Join(w, " ") {
				t.Errorf("after %q limit %d: %q, want %q", after, limit, got, w)
			}
		}
	}
}

// TestPendingUploadBesideCommittedBlob: blocks staged onto an existing
// blob (a create-only upload that lost) are no pending upload, and
// aborting them never touches the blob.
func TestPendingUploadBesideCommittedBlob(t *testing.T) {
	srv := azuritetest.Shared(t)
	b := newBucket(t, srv, srv.NewContainer(t))
	first, err := bucket.PutBytes(t.Context(), b, "k", []byte("committed"), bucket.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u, err := b.Upload(t.Context(), "k", bucket.PutOptions{IfNoneMatch: true})
	if err != nil {
		t.Fatal(err)
	}
	u.Write(make([]byte, 2*testBlockSize+1))
	if _, err := u.Commit(); !errors.Is(err, bucket.ErrPreconditionFailed) {
		t.Fatalf("create-only upload onto an existing blob: %v", err)
	}
	if ups, err := b.ListUploads(t.Context(), ""); err != nil || len(ups) != 0 {
		t.Fatalf("ListUploads = %+v, %v; want none", ups, err)
	}
	if err := b.AbortUpload(t.Context(), "k", "any"); err != nil {
		t.Fatal(err)
	}
	data, info, err := bucket.GetBytes(t.Context(), b, "k")
	if err != nil || string(data) != "committed" || info.ETag != first.ETag {
		t.Fatalf("the committed blob after the aborts: %q etag %s, %v; want it untouched (etag %s)", data, info.ETag, err, first.ETag)
	}
}

// TestUploadTokenInMetadata: conditional writes carry the token by which
// a lost answer is recognised, and it differs per write.
func TestUploadTokenInMetadata(t *testing.T) {
	srv := azuritetest.Shared(t)
	b := newBucket(t, srv, srv.NewContainer(t))
	tokens := map[string]bool{}
	for i, n := range []int{5, 2*testBlockSize + 3} {
		u, err := b.Upload(t.Context(), "t"+string(rune('0'+i)), bucket.PutOptions{IfNoneMatch: true})
		if err != nil {
			t.Fatal(err)
		}
		u.Write(make([]byte, n))
		if _, err := u.Commit(); err != nil {
			t.Fatal(err)
		}
		props, err := b.Client().NewBlobClient("t"+string(rune('0'+i))).GetProperties(t.Context(), &blob.GetPropertiesOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var tok string
		for k, v := range props.Metadata {
			if strings.EqualFold(k, "capsulewrite") {
				if v != nil {
					tok = *v
				}
			}
		}
		if len(tok) != 32 || tokens[tok] {
			t.Fatalf("write %d: token %q (seen before: %v)", i, tok, tokens[tok])
		}
		tokens[tok] = true
	}
}

// TestUploadCreateOnlyRace: streaming uploads of one key, create-only,
// commit at once; exactly one wins every round and the blob holds its
// bytes.
func TestUploadCreateOnlyRace(t *testing.T) {
	srv := azuritetest.Shared(t)
	b, err := azblob.New(azblob.Options{Container: srv.NewContainer(t), ServiceURL: srv.ServiceURL, Account: srv.Account, AccountKey: srv.Key, BlockSize: 1 << 10, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	const racers = 8
	for round := range buckettest.Rounds {
		key := fmt.Sprintf("race-%d", round)
		ups := make([]bucket.Upload, racers)
		bodies := make([][]byte, racers)
		for i := range ups {
			bodies[i] = []byte(strings.Repeat(fmt.Sprintf("round %d racer %d\n", round, i), 200))
			if ups[i], err = b.Upload(t.Context(), key, bucket.PutOptions{IfNoneMatch: true}); err != nil {
				t.Fatal(err)
			}
			if _, err := ups[i].Write(bodies[i]); err != nil {
				t.Fatal(err)
			}
		}
		var mu sync.Mutex
		var winners []int
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range ups {
			wg.Go(func() {
				<-start
				_, err := ups[i].Commit()
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					winners = append(winners, i)
				case !errors.Is(err, bucket.ErrPreconditionFailed):
					t.Errorf("round %d racer %d: %v", round, i, err)
				}
			})
		}
		close(start)
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("round %d: winners %v, want exactly one", round, winners)
		}
		if data, _, err := bucket.GetBytes(t.Context(), b, key); err != nil || !bytes.Equal(data, bodies[winners[0]]) {
			t.Fatalf("round %d: the blob holds %d bytes that are not the winner's, %v", round, len(data), err)
		}
	}
}

// TestCreateOnlyOverUncommittedBlocks: blocks staged for a name do not
// make the name exist. A create-only Put of it succeeds, and the upload
// that staged them then loses its create-only commit.
func TestCreateOnlyOverUncommittedBlocks(t *testing.T) {
	b := realAccount(t, envURL, "Azurite answers 409 BlobAlreadyExists to a create-only Put Blob on a name that has only uncommitted blocks (its createBlob does not look at isCommitted), where Azure treats the name as absent")
	key := "uncommitted-" + time.Now().UTC().Format("20060102T150405.000000000")
	u, err := b.Upload(t.Context(), key, bucket.PutOptions{IfNoneMatch: true})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Abort()
	// More than a block: the first one is staged before Write returns.
	if _, err := u.Write(make([]byte, azblob.DefaultBlockSize+1)); err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.PutBytes(t.Context(), b, key, []byte("first"), bucket.PutOptions{IfNoneMatch: true}); err != nil {
		t.Fatalf("create-only put over uncommitted blocks: %v", err)
	}
	defer b.Delete(t.Context(), key)
	if _, err := u.Commit(); err == nil {
		t.Fatal("the upload committed over the blob created meanwhile")
	}
	if data, _, err := bucket.GetBytes(t.Context(), b, key); err != nil || string(data) != "first" {
		t.Fatalf("the blob holds %q, %v", data, err)
	}
}

// TestPutLargeStreamKeepsItsConditions: a Put of a body that cannot be
// rewound and is larger than a block is staged in blocks; its create-only
// and If-Match conditions hold all the same, on the commit.
func TestPutLargeStreamKeepsItsConditions(t *testing.T) {
	srv := azuritetest.Shared(t)
	b := newBucket(t, srv, srv.NewContainer(t))
	stream := func(data []byte) io.Reader { return io.MultiReader(bytes.NewReader(data)) } // no Seek
	put := func(data []byte, opts bucket.PutOptions) (bucket.ObjectInfo, error) {
		return b.Put(t.Context(), "big", stream(data), int64(len(data)), opts)
	}
	v1, v2 := randomBytes(2*testBlockSize+5), randomBytes(2*testBlockSize+7)
	first, err := put(v1, bucket.PutOptions{IfNoneMatch: true})
	if err != nil {
		t.Fatalf("create-only put of a %d-byte stream: %v", len(v1), err)
	}
	if _, err := put(v2, bucket.PutOptions{IfNoneMatch: true}); !errors.Is(err, bucket.ErrPreconditionFailed) {
		t.Fatalf("second create-only put: %v, want precondition failed", err)
	}
	if _, err := put(v2, bucket.PutOptions{IfMatch: "0x8D0000000000000"}); !errors.Is(err, bucket.ErrPreconditionFailed) {
		t.Fatalf("if-match put on a stale etag: %v, want precondition failed", err)
	}
	if data, info, err := bucket.GetBytes(t.Context(), b, "big"); err != nil || !bytes.Equal(data, v1) || info.ETag != first.ETag {
		t.Fatalf("after the lost puts: %d bytes (first's: %v), etag %s (first's %s), %v", len(data), bytes.Equal(data, v1), info.ETag, first.ETag, err)
	}
	second, err := put(v2, bucket.PutOptions{IfMatch: first.ETag})
	if err != nil {
		t.Fatalf("if-match put on the current etag: %v", err)
	}
	if data, info, err := bucket.GetBytes(t.Context(), b, "big"); err != nil || !bytes.Equal(data, v2) || info.ETag != second.ETag || second.Size != int64(len(v2)) {
		t.Fatalf("after the if-match put: %d bytes (equal %v), etag %s, put said %+v, %v", len(data), bytes.Equal(data, v2), info.ETag, second, err)
	}
	if _, err := b.Put(t.Context(), "short", stream(v1[:100]), 200, bucket.PutOptions{}); err == nil {
		t.Fatal("a put whose body is shorter than its size succeeded")
	}
	if ups, err := b.ListUploads(t.Context(), ""); err != nil || len(ups) != 0 {
		t.Fatalf("uploads left behind: %+v, %v", ups, err)
	}
}
