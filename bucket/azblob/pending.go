package azblob

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/cnvrg/capsule/bucket"
)

var _ bucket.UploadLister = (*Bucket)(nil)

// foreignUpload is the UploadID of uncommitted blocks that this package
// did not name.
const foreignUpload = "uncommitted"

// ListUploads lists the blobs under prefix that have uncommitted blocks and
// no committed content: streaming uploads in progress, or left behind by a
// crashed writer. They are the names that a listing with uncommitted blobs
// shows and a plain listing does not, each confirmed with Get Block List
// and Get Blob Properties. Initiated is the Last-Modified the listing gives
// the uncommitted blob; UploadID names the uploads whose blocks are there
// (their block IDs carry it), "uncommitted" for blocks of other writers.
//
// Uncommitted blocks staged beside committed content (an upload onto an
// existing blob that was neither committed nor aborted) are not listed:
// discarding them would mean committing the blob again. Azure removes
// them a week after the last block was staged.
func (b *Bucket) ListUploads(ctx context.Context, prefix string) ([]bucket.PendingUpload, error) {
	all, err := b.listAll(ctx, prefix, true)
	if err != nil {
		return nil, err
	}
	committed, err := b.listAll(ctx, prefix, false)
	if err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, it := range committed {
		names[deref(it.Name)] = true
	}
	var ups []bucket.PendingUpload
	for _, it := range all {
		key := deref(it.Name)
		if names[key] {
			continue
		}
		ids, err := b.uncommitted(ctx, key)
		if err != nil {
			return nil, err
		}
		if len(ids) == 0 {
			continue // committed or discarded since the listing
		}
		if _, err := b.Head(ctx, key); err == nil {
			continue // committed since the listing
		} else if !errors.Is(err, bucket.ErrNotFound) {
			return nil, err
		}
		ups = append(ups, bucket.PendingUpload{Key: key, UploadID: strings.Join(ids, "+"), Initiated: deref(it.Properties.LastModified)})
	}
	return ups, nil
}

// listAll lists every blob under prefix, with the uncommitted ones or
// without.
func (b *Bucket) listAll(ctx context.Context, prefix string, uncommitted bool) ([]*container.BlobItem, error) {
	lo := &container.ListBlobsFlatOptions{Prefix: &prefix, Include: container.ListBlobsInclude{UncommittedBlobs: uncommitted}}
	var all []*container.BlobItem
	for {
		items, next, err := b.listOnce(ctx, lo)
		if err != nil {
			return nil, translate("list uploads", prefix, err)
		}
		all = append(all, items...)
		if next == "" {
			return all, nil
		}
		lo.Marker = &next
	}
}

// uncommitted returns the upload IDs of key's uncommitted blocks, sorted;
// none when it has none (or no blob of that name exists).
func (b *Bucket) uncommitted(ctx context.Context, key string) ([]string, error) {
	var out blockblob.GetBlockListResponse
	err := b.retry(ctx, "get block list", key, func() (err error) {
		out, err = b.blockBlob(key).GetBlockList(ctx, blockblob.BlockListTypeUncommitted, nil)
		return err
	})
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, translate("get block list", key, err)
	}
	var ids []string
	for _, bl := range out.UncommittedBlocks {
		id, ok := uploadIDOf(deref(bl.Name))
		if !ok {
			id = foreignUpload
		}
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// AbortUpload discards the uncommitted blocks of key. Azure keeps
// uncommitted blocks per blob name, so this discards every upload in
// progress on key, whatever uploadID names; one that is gone (committed or
// discarded) is no error.
func (b *Bucket) AbortUpload(ctx context.Context, key, uploadID string) error {
	return b.discardUncommitted(ctx, key)
}

// discardUncommitted removes the uncommitted blocks of key when key has no
// committed content. Azure has no request that discards uncommitted
// blocks, but a successful commit does ("any blocks not specified in the
// block list are permanently deleted"): so it commits an empty block list
// create-only, and deletes the empty blob that makes on its ETag. A blob
// that exists (committed, by this writer or another) is never touched;
// its stray blocks are left to Azure's expiry after a week. While the
// empty blob exists (two requests), a create-only write of key by another
// writer fails: capsule never streams two uploads to one key. A block
// that another writer is staging at that moment lands afterwards, and
// makes key pending again.
func (b *Bucket) discardUncommitted(ctx context.Context, key string) error {
	ids, err := b.uncommitted(ctx, key)
	if err != nil || len(ids) == 0 {
		return err
	}
	token := newToken()
	co := &blockblob.CommitBlockListOptions{
		Metadata:         map[string]*string{tokenKey: &token},
		AccessConditions: conditions(bucket.PutOptions{IfNoneMatch: true}),
	}
	var out blockblob.CommitBlockListResponse
	err = b.conditional(ctx, "discard uncommitted blocks", key, func() (err error) {
		out, err = b.blockBlob(key).CommitBlockList(ctx, nil, co)
		return err
	}, token)
	var own *ownWrite
	etag := unquote(out.ETag)
	switch {
	case errors.As(err, &own):
		etag = own.info.ETag
	case lostCondition(err):
		return nil // a committed blob is there
	case err != nil:
		return fmt.Errorf("discard uncommitted blocks of %s: %w", key, translate("commit", key, err))
	}
	err = b.retry(ctx, "delete", key, func() error {
		_, err := b.blob(key).Delete(ctx, &blob.DeleteOptions{AccessConditions: ifMatch(etag)})
		return err
	})
	if err != nil && !bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ConditionNotMet) {
		return fmt.Errorf("discard uncommitted blocks of %s: remove the empty blob that replaced them: %w", key, translate("delete", key, err))
	}
	return nil
}
