package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/requests"
)

// maxLeaseBytes bounds the read of a lease: leases are a few hundred
// bytes; a larger object is not one capsule wrote.
const maxLeaseBytes = 64 << 10

// staleStaging is a restore job's engines.RestoreJob.StaleStaging, asked
// by an engine about staging it found on the target that another request
// (or another attempt) made: that staging is abandoned when the request
// has a result, or when its lease names a later attempt. A request that
// is pending, running under that attempt, or unknown to this bucket
// (another bucket's worker may restore to the same server) is not
// abandoned, nor is anything the bucket cannot tell about.
func (x *Executor) staleStaging(ctx context.Context, id string, attempt int) (bool, error) {
	if requests.ValidateID(id) != nil {
		return false, nil
	}
	if _, err := x.cfg.Bucket.Head(ctx, requests.ResultKey(id)); err == nil {
		return true, nil
	} else if !errors.Is(err, bucket.ErrNotFound) {
		return false, fmt.Errorf("look up result of request %s: %w", id, err)
	}
	rc, _, err := x.cfg.Bucket.Get(ctx, requests.LeaseKey(id))
	if errors.Is(err, bucket.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read lease of request %s: %w", id, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxLeaseBytes+1))
	if err != nil {
		return false, fmt.Errorf("read lease of request %s: %w", id, err)
	}
	var l requests.Lease
	if len(data) > maxLeaseBytes || json.Unmarshal(data, &l) != nil || l.ID != id {
		return false, nil
	}
	return l.Attempt > attempt, nil
}
