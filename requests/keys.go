package requests

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
)

// The key layout, relative to the bucket's prefix. No key is a prefix of
// another key's "directory".
const (
	RequestsPrefix = "requests/"
	LeasesPrefix   = "leases/"
	ResultsPrefix  = "results/"
	CancelPrefix   = "cancel/"
	BackupsPrefix  = "backups/"
	// IndexName is the commit mark of a backup, written last.
	IndexName = "backupIndex.json"
	// VerifyPrefix starts the name of each verification record.
	VerifyPrefix = "verify-"
)

// RequestKey returns requests/<id>.json.
func RequestKey(id string) string { return RequestsPrefix + id + ".json" }

// LeaseKey returns leases/<id>.json.
func LeaseKey(id string) string { return LeasesPrefix + id + ".json" }

// ResultKey returns results/<id>.json.
func ResultKey(id string) string { return ResultsPrefix + id + ".json" }

// CancelKey returns cancel/<id>.json.
func CancelKey(id string) string { return CancelPrefix + id + ".json" }

// IDFromKey returns the id in a key made by RequestKey, LeaseKey,
// ResultKey or CancelKey under the given prefix.
func IDFromKey(prefix, key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, prefix)
	if !ok {
		return "", false
	}
	id, ok := strings.CutSuffix(rest, ".json")
	if !ok || ValidateID(id) != nil {
		return "", false
	}
	return id, true
}

// MisnamedID returns the id under which a worker answers an object under
// requests/ whose name is not <id>.json with a valid id ("requests/My
// Backup.json", say): "misnamed-", the name made id-safe (lower case,
// other characters as '-', at most 80 bytes), '-' and 12 hex digits of the
// key's sha256, so that two such objects never share an answer.
func MisnamedID(key string) string {
	name := idSafe(strings.TrimSuffix(strings.TrimPrefix(key, RequestsPrefix), ".json"), '-')
	if len(name) > 80 {
		name = name[:80]
	}
	sum := sha256.Sum256([]byte(key))
	return "misnamed-" + strings.Trim(name, "-") + "-" + hex.EncodeToString(sum[:6])
}

// Segment escapes a cluster or source name for use as one key segment:
// names may contain '/', which becomes %2F.
func Segment(name string) string { return url.PathEscape(name) }

// Unsegment reverses Segment.
func Unsegment(seg string) (string, error) { return url.PathUnescape(seg) }

// BackupDir returns backups/<cluster>/<source>/<backupId>/.
func BackupDir(cluster, source, backupID string) string {
	return BackupsPrefix + Segment(cluster) + "/" + Segment(source) + "/" + backupID + "/"
}

// IndexKey returns the key of a backup's backupIndex.json.
func IndexKey(cluster, source, backupID string) string {
	return BackupDir(cluster, source, backupID) + IndexName
}

// ArtifactKey returns the key of one artifact of one attempt.
func ArtifactKey(cluster, source, backupID string, attempt int, name string) string {
	return fmt.Sprintf("%s%d/%s", BackupDir(cluster, source, backupID), attempt, name)
}

// VerifyKey returns the key of a verification record made at t.
func VerifyKey(cluster, source, backupID string, t time.Time) string {
	return BackupDir(cluster, source, backupID) + VerifyPrefix + t.UTC().Format("20060102T150405.000000000Z") + ".json"
}

// BackupKey is a parsed key under backups/.
type BackupKey struct {
	Cluster, Source, BackupID string
	// Rest is what follows the backup's directory ("backupIndex.json",
	// "1/tree.tar", "verify-….json").
	Rest string
}

// ParseBackupKey splits a key under backups/.
func ParseBackupKey(key string) (BackupKey, error) {
	rest, ok := strings.CutPrefix(key, BackupsPrefix)
	if !ok {
		return BackupKey{}, fmt.Errorf("key %q is not under %s", key, BackupsPrefix)
	}
	parts := strings.SplitN(rest, "/", 4)
	if len(parts) != 4 {
		return BackupKey{}, fmt.Errorf("key %q: want backups/<cluster>/<source>/<backupId>/...", key)
	}
	cluster, err1 := Unsegment(parts[0])
	source, err2 := Unsegment(parts[1])
	if err := errors.Join(err1, err2); err != nil {
		return BackupKey{}, fmt.Errorf("key %q: %w", key, err)
	}
	return BackupKey{Cluster: cluster, Source: source, BackupID: parts[2], Rest: parts[3]}, nil
}

// NewID returns a fresh, time-ordered request id (a lower-case ULID), so
// that a listing of requests/ is oldest first.
func NewID() string {
	return strings.ToLower(ulid.MustNew(ulid.Timestamp(time.Now()), rand.Reader).String())
}

// idSafe lower-cases s and replaces each character an id cannot hold
// with other.
func idSafe(s string, other rune) string {
	return strings.Map(func(c rune) rune {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '-', c == '_':
			return c
		}
		return other
	}, strings.ToLower(s))
}

// SlotID returns the id of a scheduled request: <plan>-<slot>, with the
// plan's name made id-safe. Every scheduler replica computes the same id
// for the same slot, so only the first create-only write succeeds.
func SlotID(plan string, slot time.Time) string {
	p := strings.Trim(idSafe(plan, '.'), ".-_")
	if len(p) > 100 {
		p = p[:100]
	}
	return p + "-" + slot.UTC().Format(slotLayout)
}

// slotLayout is how SlotID writes a slot.
const slotLayout = "20060102t150405z"

// SlotOf returns the slot a scheduled request's id (SlotID) names.
func SlotOf(id string) (time.Time, bool) {
	i := strings.LastIndexByte(id, '-')
	if i < 0 {
		return time.Time{}, false
	}
	t, err := time.Parse(slotLayout, id[i+1:])
	return t, err == nil
}

// The catalog's keys (package index): write-once objects beside
// backups/ that let a reader find one backup, or list a cluster, in a
// bounded number of requests. They are derived data: the indexes under
// backups/ stay the truth, and a reader that finds the catalog missing or
// damaged falls back to them.
const (
	CatalogPrefix = "catalog/"
	// CatalogIDsPrefix holds one pointer per backup id: catalog/ids/<id>.json.
	CatalogIDsPrefix = CatalogPrefix + "ids/"
	// CatalogClustersPrefix holds each cluster's snapshots and the
	// events (commits, verifications, deletions) newer than them.
	CatalogClustersPrefix = CatalogPrefix + "clusters/"
	// CatalogMigratedKey marks a bucket whose backups made before the
	// catalog existed are all in it.
	CatalogMigratedKey = CatalogPrefix + "migrated.json"
)

// CatalogPointerKey returns catalog/ids/<backupId>.json.
func CatalogPointerKey(backupID string) string { return CatalogIDsPrefix + backupID + ".json" }

// CatalogClusterDir returns catalog/clusters/<cluster>/.
func CatalogClusterDir(cluster string) string {
	return CatalogClustersPrefix + Segment(cluster) + "/"
}

// CatalogEventDir returns catalog/clusters/<cluster>/new/<backupId>/, the
// folder of one backup's catalog events.
func CatalogEventDir(cluster, backupID string) string {
	return CatalogClusterDir(cluster) + "new/" + backupID + "/"
}
