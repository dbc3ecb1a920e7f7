package retention

import (
	"context"
	"errors"
	"fmt"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/requests"
)

// inUse lists requests/ and returns the backups that a Restore or Verify
// request there names: backup id → request id, and for a point-in-time
// Restore pitrKey(cluster, source) → request id. Requests are never
// rewritten, so each (key, ETag) is read and parsed once per Runner; the
// cache forgets what the listing no longer shows.
func (r *Runner) inUse(ctx context.Context) (map[string]string, error) {
	var listed []bucket.ObjectInfo
	if err := bucket.Walk(ctx, r.cfg.Bucket, requests.RequestsPrefix, func(o bucket.ObjectInfo) error {
		listed = append(listed, o)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list requests: %w", err)
	}
	out := map[string]string{}
	present := map[string]bool{}
	for _, o := range listed {
		id, ok := requests.IDFromKey(requests.RequestsPrefix, o.Key)
		if !ok {
			continue
		}
		ck := o.Key + "\x00" + o.ETag
		present[ck] = true
		r.mu.Lock()
		req, cached := r.seen[ck]
		r.mu.Unlock()
		if !cached {
			data, _, err := bucket.GetBytesLimit(ctx, r.cfg.Bucket, o.Key, requests.DefaultMaxControlObject)
			if errors.Is(err, bucket.ErrNotFound) {
				continue // finished since the listing
			}
			if err != nil && !errors.Is(err, bucket.ErrTooLarge) {
				return nil, fmt.Errorf("read request %s: %w", id, err)
			}
			// One over the size limit fails to parse: a worker rejects it.
			req, err = requests.Parse(data)
			if err != nil || (req.Kind != requests.KindRestore && req.Kind != requests.KindVerify) {
				req = nil // a malformed request is rejected, never run
			}
			r.mu.Lock()
			r.seen[ck] = req
			r.mu.Unlock()
		}
		switch {
		case req != nil && req.PointInTime != nil:
			// A point-in-time Restore names no backup: its worker picks
			// a base backup of the source when it runs, so every base
			// backup of that source stays while the request is open.
			out[pitrKey(req.ClusterOrDefault(), req.PointInTime.Source)] = id
		case req != nil && req.BackupRef() != "":
			out[req.BackupRef()] = id
		}
	}
	r.mu.Lock()
	for ck := range r.seen {
		if !present[ck] {
			delete(r.seen, ck)
		}
	}
	r.mu.Unlock()
	return out, nil
}

// pitrKey is inUse's key for the base backups of a source that an open
// point-in-time Restore may pick. It cannot collide with a backup id (ids
// hold no NUL).
func pitrKey(cluster, source string) string {
	return "pitr\x00" + cluster + "\x00" + source
}

// baseBackupFormat is the index format of a PostgreSQL base backup
// (postgres.FormatBase; a test keeps the two equal without making
// retention depend on the engine).
const baseBackupFormat = "pg_basebackup-tar.v1"
