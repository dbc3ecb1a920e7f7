package azblob

import (
	"context"
	"fmt"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/cnvrg/capsule/bucket"
)

const (
	// defaultListLimit is a page's size when the caller names none.
	defaultListLimit = 1000
	// maxListResults is the most blobs Azure lists in one answer.
	maxListResults = 5000
)

// List lists one page of blobs whose names start with prefix, in ascending
// byte order. Azure continues a listing from an opaque marker, not from a
// key, so StartAfter is the startFrom parameter (the listing starts at
// that name, inclusive), and the name itself is dropped; a service that
// ignores startFrom (Azurite before 3.37) is paged through from the start
// and gives the same answer, more slowly. One blob more than the page
// holds is asked for, so that Truncated is exact.
func (b *Bucket) List(ctx context.Context, prefix string, opts bucket.ListOptions) (bucket.ListPage, error) {
	limit := opts.Limit
	if limit <= 0 {
		limit = defaultListLimit
	}
	limit = min(limit, maxListResults-1)
	lo := &container.ListBlobsFlatOptions{Prefix: &prefix, MaxResults: to.Ptr(int32(limit + 1))}
	if opts.StartAfter != "" && opts.StartAfter >= prefix {
		lo.StartFrom = to.Ptr(opts.StartAfter)
	}
	objs := make([]bucket.ObjectInfo, 0, limit+1)
	last := opts.StartAfter
	for {
		items, next, err := b.listOnce(ctx, lo)
		if err != nil {
			return bucket.ListPage{}, translate("list", prefix, err)
		}
		for _, it := range items {
			key := deref(it.Name)
			if key <= opts.StartAfter || !strings.HasPrefix(key, prefix) {
				continue
			}
			if key <= last {
				// Paging by StartAfter would skip or repeat keys.
				return bucket.ListPage{}, fmt.Errorf("list %s: the store listed %q after %q, not in ascending byte order", prefix, key, last)
			}
			last = key
			p := it.Properties
			objs = append(objs, bucket.ObjectInfo{
				Key:          key,
				Size:         deref(p.ContentLength),
				ETag:         unquote(p.ETag),
				LastModified: deref(p.LastModified),
			})
		}
		if len(objs) > limit {
			return bucket.ListPage{Objects: objs[:limit], Truncated: true}, nil
		}
		if next == "" {
			return bucket.ListPage{Objects: objs}, nil
		}
		lo.Marker = &next
	}
}

// listOnce asks for one page of a flat listing, from lo.Marker.
func (b *Bucket) listOnce(ctx context.Context, lo *container.ListBlobsFlatOptions) ([]*container.BlobItem, string, error) {
	var out container.ListBlobsFlatResponse
	err := b.retry(ctx, "list", deref(lo.Prefix), func() (err error) {
		out, err = b.c.NewListBlobsFlatPager(lo).NextPage(ctx)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	var items []*container.BlobItem
	if out.Segment != nil {
		items = out.Segment.BlobItems
	}
	return items, deref(out.NextMarker), nil
}
