// Package buckettest is the conformance suite that every bucket.Bucket
// implementation passes: Run it from the implementation's tests.
package buckettest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
)

// Rounds is how often each race is repeated.
const Rounds = 10

// Racers is how many goroutines race in each round.
const Racers = 20

// LargeSize is the size of the large Upload case.
const LargeSize = 40 << 20

// Run runs the suite. newBucket returns the bucket under test; it is called
// once per case, and each case works below a fresh random prefix of it.
func Run(t *testing.T, newBucket func(t *testing.T) bucket.Bucket) {
	cases := []struct {
		name string
		fn   func(t *testing.T, b bucket.Bucket)
	}{
		{"RoundTrip", testRoundTrip},
		{"NotFound", testNotFound},
		{"GetBytesLimit", testGetBytesLimit},
		{"ReadWhileReplaced", testReadWhileReplaced},
		{"DeleteIdempotent", testDelete},
		{"ListOrder", testListOrder},
		{"ListPagination", testListPagination},
		{"CreateOnly", testCreateOnly},
		{"IfMatch", testIfMatch},
		{"CreateOnlyRace", testCreateOnlyRace},
		{"IfMatchRace", testIfMatchRace},
		{"UploadSmall", testUploadSmall},
		{"UploadLarge", testUploadLarge},
		{"UploadAbort", testUploadAbort},
		{"UploadIfNoneMatch", testUploadIfNoneMatch},
		{"UploadCanceled", testUploadCanceled},
		{"ServerTime", testServerTime},
		{"Prefixed", testPrefixed},
		{"PendingUploads", testPendingUploads},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := bucket.Prefixed(newBucket(t), "buckettest-"+randomHex(6)+"/")
			c.fn(t, b)
		})
	}
}

func ctx(t *testing.T) context.Context { return t.Context() }

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func put(t *testing.T, b bucket.Bucket, key string, data []byte, opts bucket.PutOptions) bucket.ObjectInfo {
	t.Helper()
	info, err := bucket.PutBytes(ctx(t), b, key, data, opts)
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	if info.ETag == "" || strings.Contains(info.ETag, `"`) {
		t.Fatalf("put %s: etag %q: want non-empty, unquoted", key, info.ETag)
	}
	return info
}

func get(t *testing.T, b bucket.Bucket, key string) ([]byte, bucket.ObjectInfo) {
	t.Helper()
	data, info, err := bucket.GetBytes(ctx(t), b, key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return data, info
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

func testRoundTrip(t *testing.T, b bucket.Bucket) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	for name, data := range map[string][]byte{
		"empty":  {},
		"text":   []byte(`{"hello":"world"}`),
		"binary": append(all, randomBytes(100_000)...),
	} {
		t.Run(name, func(t *testing.T) {
			key := "round/" + name
			pinfo := put(t, b, key, data, bucket.PutOptions{ContentType: "application/octet-stream"})
			if pinfo.Key != key {
				t.Errorf("put info key %q, want %q", pinfo.Key, key)
			}
			got, ginfo := get(t, b, key)
			if !bytes.Equal(got, data) {
				t.Fatalf("get returned %d bytes that differ from the %d put", len(got), len(data))
			}
			hinfo, err := b.Head(ctx(t), key)
			if err != nil {
				t.Fatal(err)
			}
			for what, info := range map[string]bucket.ObjectInfo{"get": ginfo, "head": hinfo} {
				if info.Key != key || info.Size != int64(len(data)) || info.ETag != pinfo.ETag {
					t.Errorf("%s: key %q size %d etag %q, want %q %d %q", what, info.Key, info.Size, info.ETag, key, len(data), pinfo.ETag)
				}
				if info.LastModified.IsZero() {
					t.Errorf("%s: LastModified is zero", what)
				}
			}
		})
	}
}

func testNotFound(t *testing.T, b bucket.Bucket) {
	_, err := b.Head(ctx(t), "missing/key")
	wantErr(t, "head missing", err, bucket.ErrNotFound)
	_, _, err = b.Get(ctx(t), "missing/key")
	wantErr(t, "get missing", err, bucket.ErrNotFound)
	_, err = b.Head(ctx(t), "missing")
	wantErr(t, "head missing", err, bucket.ErrNotFound)
}

// testReadWhileReplaced: a body opened before its object is replaced (or
// deleted) yields the version it opened, whole, or fails with
// bucket.ErrChanged naming the key; never bytes of two versions. The
// object is larger than the buffers between store and reader, so most of
// it is read after the replace.
func testReadWhileReplaced(t *testing.T, b bucket.Bucket) {
	for _, then := range []string{"replaced", "deleted"} {
		t.Run(then, func(t *testing.T) {
			key := "replaced/" + then
			old := randomBytes(8 << 20)
			info := put(t, b, key, old, bucket.PutOptions{})
			rc, got, err := b.Get(ctx(t), key)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			if got.ETag != info.ETag || got.Size != int64(len(old)) {
				t.Fatalf("get %s: etag %s size %d, want %s %d", key, got.ETag, got.Size, info.ETag, len(old))
			}
			head := make([]byte, 1000)
			if _, err := io.ReadFull(rc, head); err != nil {
				t.Fatal(err)
			}
			if then == "replaced" {
				put(t, b, key, randomBytes(len(old)), bucket.PutOptions{})
			} else if err := b.Delete(ctx(t), key); err != nil {
				t.Fatal(err)
			}
			rest, err := io.ReadAll(rc)
			read := append(head, rest...)
			switch {
			case err == nil && !bytes.Equal(read, old):
				t.Fatalf("read %d bytes that are not the version opened", len(read))
			case err != nil && (!errors.Is(err, bucket.ErrChanged) || !strings.Contains(err.Error(), key)):
				t.Fatalf("read after %d bytes: %v; want the old version whole, or an error naming %s that wraps bucket.ErrChanged", len(read), err, key)
			case err != nil && !bytes.Equal(read, old[:len(read)]):
				t.Fatalf("the %d bytes read before %v are not the version opened", len(read), err)
			}
		})
	}
}

func testDelete(t *testing.T, b bucket.Bucket) {
	put(t, b, "d/x", []byte("x"), bucket.PutOptions{})
	put(t, b, "d/y", []byte("y"), bucket.PutOptions{})
	for i := 0; i < 2; i++ {
		if err := b.Delete(ctx(t), "d/x"); err != nil {
			t.Fatalf("delete #%d: %v", i+1, err)
		}
	}
	if err := b.Delete(ctx(t), "never/was"); err != nil {
		t.Fatalf("delete missing: %v", err)
	}
	_, err := b.Head(ctx(t), "d/x")
	wantErr(t, "head deleted", err, bucket.ErrNotFound)
	if _, err := b.Head(ctx(t), "d/y"); err != nil {
		t.Fatalf("sibling of deleted key: %v", err)
	}
	// A key can be created again after its delete.
	put(t, b, "d/x", []byte("again"), bucket.PutOptions{IfNoneMatch: true})
}

func list(t *testing.T, b bucket.Bucket, prefix string, opts bucket.ListOptions) bucket.ListPage {
	t.Helper()
	page, err := b.List(ctx(t), prefix, opts)
	if err != nil {
		t.Fatalf("list %q %+v: %v", prefix, opts, err)
	}
	return page
}

func keys(objs []bucket.ObjectInfo) []string {
	out := []string{}
	for _, o := range objs {
		out = append(out, o.Key)
	}
	return out
}

func testListOrder(t *testing.T, b bucket.Bucket) {
	// '-' (0x2d) and '.' (0x2e) sort before '/' (0x2f): a naive walk of
	// directories gets these wrong. No key is a prefix of another key's
	// "directory".
	all := []string{
		"k/x", "k/y/z", "k/y-z", "k-x", "k.x", "k0", "k/ü", "k/日本", "k/a.b/c",
		"k/a-b", "k/a/b", "k/z", "l",
	}
	for _, k := range all {
		put(t, b, k, []byte(k), bucket.PutOptions{})
	}
	sorted := slices.Clone(all)
	sort.Strings(sorted)
	for _, c := range []struct {
		prefix string
		want   []string
	}{
		{"", sorted},
		{"k", filter(sorted, "k")},
		{"k/", filter(sorted, "k/")},
		{"k/y", filter(sorted, "k/y")},
		{"k/a", filter(sorted, "k/a")},
		{"k/y/", []string{"k/y/z"}},
		{"nothing/", []string{}},
	} {
		page := list(t, b, c.prefix, bucket.ListOptions{})
		if got := keys(page.Objects); !slices.Equal(got, c.want) || page.Truncated {
			t.Errorf("list %q: got %q (truncated %v), want %q", c.prefix, got, page.Truncated, c.want)
		}
	}
	page := list(t, b, "k/", bucket.ListOptions{StartAfter: "k/a/b"})
	if got, want := keys(page.Objects), filter(sorted, "k/")[3:]; !slices.Equal(got, want) {
		t.Errorf("list after k/a/b: got %q, want %q", got, want)
	}
	for _, o := range page.Objects {
		if o.Size != int64(len(o.Key)) || o.ETag == "" || !o.ServerTime.IsZero() {
			t.Errorf("listed %+v: want size %d, an etag, zero server time", o, len(o.Key))
		}
	}
}

func filter(keys []string, prefix string) []string {
	out := []string{}
	for _, k := range keys {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	return out
}

func testListPagination(t *testing.T, b bucket.Bucket) {
	var want []string
	for i := 0; i < 23; i++ {
		// Some in subdirectories, so pages cross directory boundaries.
		k := fmt.Sprintf("p/%02d", i)
		if i%4 == 0 {
			k = fmt.Sprintf("p/%02d/x", i)
		}
		want = append(want, k)
		put(t, b, k, nil, bucket.PutOptions{})
	}
	sort.Strings(want)
	var got []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("listing does not end")
		}
		page := list(t, b, "p/", bucket.ListOptions{StartAfter: after, Limit: 5})
		if len(page.Objects) > 5 {
			t.Fatalf("page of %d objects, limit 5", len(page.Objects))
		}
		got = append(got, keys(page.Objects)...)
		if last := len(got) == len(want); page.Truncated == last && len(page.Objects) > 0 {
			t.Fatalf("page ending at %d of %d keys: truncated %v", len(got), len(want), page.Truncated)
		}
		if !page.Truncated {
			break
		}
		after = got[len(got)-1]
	}
	if !slices.Equal(got, want) {
		t.Fatalf("paged listing %q, want %q", got, want)
	}
	var walked []string
	if err := bucket.Walk(ctx(t), b, "p/", func(o bucket.ObjectInfo) error {
		walked = append(walked, o.Key)
		return nil
	}); err != nil || !slices.Equal(walked, want) {
		t.Fatalf("walk: %q, %v; want %q", walked, err, want)
	}
}

func testCreateOnly(t *testing.T, b bucket.Bucket) {
	first := put(t, b, "c/lease.json", []byte("first"), bucket.PutOptions{IfNoneMatch: true})
	_, err := bucket.PutBytes(ctx(t), b, "c/lease.json", []byte("second"), bucket.PutOptions{IfNoneMatch: true})
	wantErr(t, "second create", err, bucket.ErrPreconditionFailed)
	data, info := get(t, b, "c/lease.json")
	if string(data) != "first" || info.ETag != first.ETag {
		t.Fatalf("after lost create: %q etag %s, want %q etag %s", data, info.ETag, "first", first.ETag)
	}
}

func testIfMatch(t *testing.T, b bucket.Bucket) {
	key := "m/lease.json"
	_, err := bucket.PutBytes(ctx(t), b, key, []byte("v0"), bucket.PutOptions{IfMatch: "0123456789abcdef0123456789abcdef"})
	wantErr(t, "if-match on missing key", err, bucket.ErrPreconditionFailed)

	e1 := put(t, b, key, []byte("v1"), bucket.PutOptions{}).ETag
	e2 := put(t, b, key, []byte("v2"), bucket.PutOptions{IfMatch: e1}).ETag
	if e2 == e1 {
		t.Fatalf("etag unchanged by a write: %s", e1)
	}
	_, err = bucket.PutBytes(ctx(t), b, key, []byte("v3"), bucket.PutOptions{IfMatch: e1})
	wantErr(t, "if-match on stale etag", err, bucket.ErrPreconditionFailed)
	e3 := put(t, b, key, []byte("v3"), bucket.PutOptions{IfMatch: e2}).ETag
	if e3 == e2 || e3 == e1 {
		t.Fatalf("etag repeated: %s %s %s", e1, e2, e3)
	}
	if data, info := get(t, b, key); string(data) != "v3" || info.ETag != e3 {
		t.Fatalf("got %q etag %s, want v3 etag %s", data, info.ETag, e3)
	}
	if err := b.Delete(ctx(t), key); err != nil {
		t.Fatal(err)
	}
	_, err = bucket.PutBytes(ctx(t), b, key, []byte("v4"), bucket.PutOptions{IfMatch: e3})
	wantErr(t, "if-match after delete", err, bucket.ErrPreconditionFailed)
}

// race runs Racers goroutines that start together; write(i) returns nil when
// racer i won. It returns the winners' indexes.
func race(t *testing.T, write func(i int) error) []int {
	t.Helper()
	var (
		start   = make(chan struct{})
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners []int
		others  []error
	)
	for i := 0; i < Racers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			err := write(i)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				winners = append(winners, i)
			case !errors.Is(err, bucket.ErrPreconditionFailed):
				others = append(others, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	for _, err := range others {
		t.Errorf("racer failed with neither success nor precondition failed: %v", err)
	}
	return winners
}

func body(round, racer int) []byte {
	return []byte(fmt.Sprintf(`{"round":%d,"racer":%d,"token":%q}`, round, racer, randomHex(8)))
}

func testCreateOnlyRace(t *testing.T, b bucket.Bucket) {
	for round := 0; round < Rounds; round++ {
		key := fmt.Sprintf("race/create-%d.json", round)
		bodies := make([][]byte, Racers)
		for i := range bodies {
			bodies[i] = body(round, i)
		}
		winners := race(t, func(i int) error {
			_, err := bucket.PutBytes(ctx(t), b, key, bodies[i], bucket.PutOptions{IfNoneMatch: true})
			return err
		})
		if len(winners) != 1 {
			t.Fatalf("round %d: %d winners %v, want exactly 1", round, len(winners), winners)
		}
		if data, _ := get(t, b, key); !bytes.Equal(data, bodies[winners[0]]) {
			t.Fatalf("round %d: object holds %s, winner wrote %s", round, data, bodies[winners[0]])
		}
	}
}

func testIfMatchRace(t *testing.T, b bucket.Bucket) {
	key := "race/cas.json"
	etag := put(t, b, key, body(-1, -1), bucket.PutOptions{}).ETag
	for round := 0; round < Rounds; round++ {
		bodies := make([][]byte, Racers)
		etags := make([]string, Racers)
		for i := range bodies {
			bodies[i] = body(round, i)
		}
		winners := race(t, func(i int) error {
			info, err := bucket.PutBytes(ctx(t), b, key, bodies[i], bucket.PutOptions{IfMatch: etag})
			etags[i] = info.ETag
			return err
		})
		if len(winners) != 1 {
			t.Fatalf("round %d: %d winners %v, want exactly 1", round, len(winners), winners)
		}
		data, info := get(t, b, key)
		if w := winners[0]; !bytes.Equal(data, bodies[w]) || info.ETag != etags[w] {
			t.Fatalf("round %d: object holds %s etag %s, winner wrote %s etag %s", round, data, info.ETag, bodies[w], etags[w])
		}
		etag = info.ETag
	}
}

// writeOdd writes data through w in pieces of awkward sizes.
func writeOdd(t *testing.T, w io.Writer, data []byte) {
	t.Helper()
	sizes := []int{1, 4093, 65537, 1<<20 + 3, 7, 3<<20 + 11, 100_003}
	for i := 0; len(data) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(data))
		if m, err := w.Write(data[:n]); err != nil || m != n {
			t.Fatalf("write %d bytes: wrote %d, %v", n, m, err)
		}
		data = data[n:]
	}
}

func checkContent(t *testing.T, b bucket.Bucket, key string, want []byte, etag string) {
	t.Helper()
	rc, info, err := b.Get(ctx(t), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(want)
	if n != int64(len(want)) || info.Size != n || !bytes.Equal(h.Sum(nil), sum[:]) {
		t.Fatalf("%s: read %d bytes (info size %d) sha256 %x, want %d bytes sha256 %x", key, n, info.Size, h.Sum(nil), len(want), sum)
	}
	if etag != "" && info.ETag != etag {
		t.Fatalf("%s: etag %s, commit said %s", key, info.ETag, etag)
	}
}

func upload(t *testing.T, b bucket.Bucket, key string, data []byte, opts bucket.PutOptions) (bucket.ObjectInfo, error) {
	t.Helper()
	u, err := b.Upload(ctx(t), key, opts)
	if err != nil {
		t.Fatalf("upload %s: %v", key, err)
	}
	writeOdd(t, u, data)
	info, err := u.Commit()
	if err != nil {
		if aerr := u.Abort(); aerr != nil {
			t.Errorf("abort after failed commit: %v", aerr)
		}
	}
	return info, err
}

func testUploadSmall(t *testing.T, b bucket.Bucket) {
	for _, n := range []int{0, 1, 70_000} {
		data := randomBytes(n)
		key := fmt.Sprintf("up/small-%d", n)
		info, err := upload(t, b, key, data, bucket.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if info.Key != key || info.Size != int64(n) || info.ETag == "" {
			t.Fatalf("commit info %+v", info)
		}
		checkContent(t, b, key, data, info.ETag)
	}
}

func testUploadLarge(t *testing.T, b bucket.Bucket) {
	data := randomBytes(LargeSize)
	start := time.Now()
	info, err := upload(t, b, "up/large.bin", data, bucket.PutOptions{ContentType: "application/octet-stream"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("uploaded %d MiB in %s", LargeSize>>20, time.Since(start).Round(time.Millisecond))
	if info.Size != LargeSize {
		t.Fatalf("commit size %d, want %d", info.Size, LargeSize)
	}
	checkContent(t, b, "up/large.bin", data, info.ETag)
}

func testUploadAbort(t *testing.T, b bucket.Bucket) {
	for _, n := range []int{10, 12 << 20} {
		u, err := b.Upload(ctx(t), "up/aborted", bucket.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		writeOdd(t, u, randomBytes(n))
		if err := u.Abort(); err != nil {
			t.Fatalf("abort after %d bytes: %v", n, err)
		}
		_, err = b.Head(ctx(t), "up/aborted")
		wantErr(t, "head after abort", err, bucket.ErrNotFound)
		if page := list(t, b, "up/", bucket.ListOptions{}); len(page.Objects) != 0 {
			t.Fatalf("after abort, listing shows %q", keys(page.Objects))
		}
	}
}

// testUploadCanceled: an upload whose context ends fails to commit and
// leaves nothing, never a truncated object.
func testUploadCanceled(t *testing.T, b bucket.Bucket) {
	for _, n := range []int{10, 12 << 20} {
		cctx, cancel := context.WithCancel(ctx(t))
		u, err := b.Upload(cctx, "up/canceled", bucket.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		writeOdd(t, u, randomBytes(n))
		cancel()
		u.Write(randomBytes(1000)) // may fail already
		if info, err := u.Commit(); err == nil {
			t.Fatalf("commit after cancel of a %d-byte upload succeeded: %+v", n, info)
		}
		if err := u.Abort(); err != nil {
			t.Errorf("abort after failed commit: %v", err)
		}
		_, err = b.Head(ctx(t), "up/canceled")
		wantErr(t, "head after canceled upload", err, bucket.ErrNotFound)
	}
}

func testUploadIfNoneMatch(t *testing.T, b bucket.Bucket) {
	for _, n := range []int{100, 12 << 20} {
		key := fmt.Sprintf("up/once-%d", n)
		data := randomBytes(n)
		first, err := upload(t, b, key, data, bucket.PutOptions{IfNoneMatch: true})
		if err != nil {
			t.Fatalf("create-only upload of %d bytes onto a new key: %v", n, err)
		}
		_, err = upload(t, b, key, randomBytes(n), bucket.PutOptions{IfNoneMatch: true})
		wantErr(t, fmt.Sprintf("create-only upload of %d bytes onto an existing key", n), err, bucket.ErrPreconditionFailed)
		checkContent(t, b, key, data, first.ETag)
	}
}

// testPendingUploads: a bucket.UploadLister lists an open upload under
// its prefix and only there, and AbortUpload discards it so that its
// Commit fails and leaves nothing. Skipped for buckets that are none.
func testPendingUploads(t *testing.T, b bucket.Bucket) {
	ul, ok := b.(bucket.UploadLister)
	if !ok {
		t.Skip("not a bucket.UploadLister")
	}
	const n = 12 << 20 // more than a part, so S3 has a multipart upload
	open := func(key string) bucket.Upload {
		u, err := b.Upload(ctx(t), key, bucket.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		writeOdd(t, u, randomBytes(n))
		return u
	}
	mine, other := open("up/pending"), open("elsewhere/pending")
	defer other.Abort()
	ups, err := ul.ListUploads(ctx(t), "up/")
	if err != nil {
		t.Fatal(err)
	}
	if len(ups) != 1 || ups[0].Key != "up/pending" || ups[0].UploadID == "" {
		t.Fatalf("ListUploads(up/) = %+v, want only up/pending", ups)
	}
	if d := time.Since(ups[0].Initiated); d > time.Minute || d < -time.Minute {
		t.Errorf("initiated %s, %s from now", ups[0].Initiated, d)
	}
	if err := ul.AbortUpload(ctx(t), ups[0].Key, ups[0].UploadID); err != nil {
		t.Fatalf("abort: %v", err)
	}
	if err := ul.AbortUpload(ctx(t), ups[0].Key, ups[0].UploadID); err != nil {
		t.Fatalf("abort of an aborted upload: %v", err)
	}
	if ups, err := ul.ListUploads(ctx(t), "up/"); err != nil || len(ups) != 0 {
		t.Fatalf("after abort, ListUploads(up/) = %+v, %v", ups, err)
	}
	if info, err := mine.Commit(); err == nil {
		t.Fatalf("commit of an aborted upload succeeded: %+v", info)
	}
	mine.Abort()
	_, err = b.Head(ctx(t), "up/pending")
	wantErr(t, "head after aborted upload", err, bucket.ErrNotFound)
	if ups, err := ul.ListUploads(ctx(t), "elsewhere/"); err != nil || len(ups) != 1 {
		t.Fatalf("ListUploads(elsewhere/) = %+v, %v; want the other upload", ups, err)
	}
}

func testServerTime(t *testing.T, b bucket.Bucket) {
	near := func(what string, info bucket.ObjectInfo) {
		t.Helper()
		if d := time.Since(info.ServerTime); d > time.Minute || d < -time.Minute {
			t.Errorf("%s: server time %s is %s from now", what, info.ServerTime, d)
		}
	}
	pinfo := put(t, b, "time", []byte("t"), bucket.PutOptions{})
	near("put", pinfo)
	_, ginfo := get(t, b, "time")
	near("get", ginfo)
	hinfo, err := b.Head(ctx(t), "time")
	if err != nil {
		t.Fatal(err)
	}
	near("head", hinfo)
	u, err := b.Upload(ctx(t), "time-upload", bucket.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u.Write([]byte("t"))
	cinfo, err := u.Commit()
	if err != nil {
		t.Fatal(err)
	}
	near("commit", cinfo)
}

func testPrefixed(t *testing.T, b bucket.Bucket) {
	x := bucket.Prefixed(b, "x/")
	y := bucket.Prefixed(b, "y/")
	put(t, x, "k", []byte("in x"), bucket.PutOptions{})
	put(t, y, "k", []byte("in y"), bucket.PutOptions{})
	put(t, b, "x-k", []byte("beside x"), bucket.PutOptions{})
	if data, info := get(t, x, "k"); string(data) != "in x" || info.Key != "k" {
		t.Fatalf("x view: %q key %q", data, info.Key)
	}
	if data, _ := get(t, b, "y/k"); string(data) != "in y" {
		t.Fatalf("y/k: %q", data)
	}
	page := list(t, x, "", bucket.ListOptions{})
	if got := keys(page.Objects); !slices.Equal(got, []string{"k"}) {
		t.Fatalf("x view lists %q, want [k]", got)
	}
	if err := x.Delete(ctx(t), "k"); err != nil {
		t.Fatal(err)
	}
	if _, err := y.Head(ctx(t), "k"); err != nil {
		t.Fatalf("y/k after deleting x/k: %v", err)
	}
}
