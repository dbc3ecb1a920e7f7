package maintenance_test

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/cnvrg/capsule/bucket"
)

// simBucket is a bucket whose clock runs ahead of the real one by an
// offset the test moves (days at a time, no sleeps): every response's
// ServerTime is the real one plus the offset now, and every object's
// LastModified (an upload's Initiated) is the real one plus the offset
// when it was written. Every part of capsule judges time by the bucket's
// clock, so this is time passing for all of them. It also counts the
// successful deletes of each key, across all the replicas that share it.
type simBucket struct {
	b  bucket.Bucket
	ul bucket.UploadLister

	mu      sync.Mutex
	offset  time.Duration
	written map[string]time.Duration // key → offset at its write
	started map[string]time.Duration // upload key → offset at its start
	deletes map[string]int
}

func newSim(b bucket.Bucket) *simBucket {
	ul, _ := b.(bucket.UploadLister)
	return &simBucket{b: b, ul: ul, written: map[string]time.Duration{}, started: map[string]time.Duration{}, deletes: map[string]int{}}
}

func (s *simBucket) advance(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.offset += d
}

// now is the bucket's clock.
func (s *simBucket) now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Now().Add(s.offset)
}

func (s *simBucket) shift(info bucket.ObjectInfo) bucket.ObjectInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !info.ServerTime.IsZero() {
		info.ServerTime = info.ServerTime.Add(s.offset)
	}
	if !info.LastModified.IsZero() {
		info.LastModified = info.LastModified.Add(s.written[info.Key])
	}
	return info
}

// writing marks key as written now, before the write lands, so that no
// reader in between sees it written at another time. A write that fails
// leaves the mark: it lost to a write of the same moment (the offset
// moves only between the test's days).
func (s *simBucket) writing(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.written[key] = s.offset
}

func (s *simBucket) Get(ctx context.Context, key string) (io.ReadCloser, bucket.ObjectInfo, error) {
	rc, info, err := s.b.Get(ctx, key)
	info.Key = key
	return rc, s.shift(info), err
}

func (s *simBucket) Head(ctx context.Context, key string) (bucket.ObjectInfo, error) {
	info, err := s.b.Head(ctx, key)
	info.Key = key
	return s.shift(info), err
}

func (s *simBucket) List(ctx context.Context, prefix string, opts bucket.ListOptions) (bucket.ListPage, error) {
	p, err := s.b.List(ctx, prefix, opts)
	for i := range p.Objects {
		p.Objects[i] = s.shift(p.Objects[i])
	}
	return p, err
}

func (s *simBucket) Put(ctx context.Context, key string, body io.Reader, size int64, opts bucket.PutOptions) (bucket.ObjectInfo, error) {
	s.writing(key)
	info, err := s.b.Put(ctx, key, body, size, opts)
	info.Key = key
	return s.shift(info), err
}

func (s *simBucket) Delete(ctx context.Context, key string) error {
	_, herr := s.b.Head(ctx, key)
	err := s.b.Delete(ctx, key)
	if err == nil && herr == nil {
		s.mu.Lock()
		s.deletes[key]++
		s.mu.Unlock()
	}
	return err
}

func (s *simBucket) Upload(ctx context.Context, key string, opts bucket.PutOptions) (bucket.Upload, error) {
	u, err := s.b.Upload(ctx, key, opts)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.started[key] = s.offset
	s.mu.Unlock()
	return &simUpload{Upload: u, s: s, key: key}, nil
}

type simUpload struct {
	bucket.Upload
	s   *simBucket
	key string
}

func (u *simUpload) Commit() (bucket.ObjectInfo, error) {
	u.s.writing(u.key)
	info, err := u.Upload.Commit()
	info.Key = u.key
	return u.s.shift(info), err
}

func (s *simBucket) ListUploads(ctx context.Context, prefix string) ([]bucket.PendingUpload, error) {
	ups, err := s.ul.ListUploads(ctx, prefix)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range ups {
		ups[i].Initiated = ups[i].Initiated.Add(s.started[ups[i].Key])
	}
	return ups, err
}

func (s *simBucket) AbortUpload(ctx context.Context, key, uploadID string) error {
	return s.ul.AbortUpload(ctx, key, uploadID)
}

// twiceDeleted lists the keys deleted more than once.
func (s *simBucket) twiceDeleted() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k, n := range s.deletes {
		if n > 1 {
			out = append(out, k)
		}
	}
	return out
}
