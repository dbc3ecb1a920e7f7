package legacy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/requests"
)

// DefaultDir is the folder the old service wrote into when its --dst-dir
// (CNVRG_CAPSULE_DST_DIR) was not set.
const DefaultDir = "cnvrg-smart-backups"

// The names of a backup's state file: statefile.json since 1.0.3,
// indexfile.json before.
const (
	StateFile = "statefile.json"
	IndexFile = "indexfile.json"
)

// MaxStateFile is the largest state file that is read: the old service
// wrote a few KiB.
const MaxStateFile = 1 << 20

// Engine is the capsule engine that restores the old service's dumps.
const Engine = "postgres"

// Statuses the old service wrote. Only a finished backup has a whole dump.
const (
	StatusFinished = "finished"
	StatusFailed   = "failed"
)

var knownStatus = map[string]bool{
	"initialized": true, "dumpingdb": true, "uploadingdb": true,
	StatusFailed: true, StatusFinished: true, "restorerequest": true,
}

// dumpName is the form of service.dumpfile: a plain file name
// (<shortuuid>-pgdump.tar as the old service made them).
var dumpName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$`)

// ErrNotFound is wrapped by Find when the folder holds no backup with the id.
var ErrNotFound = errors.New("no backup of the old service with this id")

// ErrDamaged is wrapped by Find when the backup's state file is not believed.
var ErrDamaged = errors.New("state file not usable")

// Store reads the old service's backups in one folder of a bucket (its
// --dst-dir). It never writes there but to delete state files
// (DeleteStateFiles).
type Store struct {
	b   bucket.Bucket // the folder's view: keys relative to dir + "/"
	dir string
}

// Open returns the Store of folder dir (the old --dst-dir; DefaultDir
// when empty) in root, the whole bucket (bucket.Unprefixed of capsule's
// view).
func Open(root bucket.Bucket, dir string) (*Store, error) {
	d := strings.Trim(dir, "/")
	if dir == "" {
		d = DefaultDir
	}
	if d == "" {
		return nil, fmt.Errorf("legacy folder %q: names no folder", dir)
	}
	for _, seg := range strings.Split(d, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return nil, fmt.Errorf("legacy folder %q: empty, . and .. segments are not allowed", dir)
		}
		for _, c := range seg {
			if c < 0x20 || c == 0x7f {
				return nil, fmt.Errorf("legacy folder %q: control characters are not allowed", dir)
			}
		}
	}
	return &Store{b: bucket.Prefixed(root, d+"/"), dir: d}, nil
}

// Dir is the folder, as a key prefix without its final slash.
func (s *Store) Dir() string { return s.dir }

// Key is the bucket key (from the bucket's root) of a key in the folder.
func (s *Store) Key(k string) string { return s.dir + "/" + k }

// Backup is one backup of the old service, as capsule believes it: the
// few fields of its state file that capsule needs, checked, and nothing
// else of it (not the keys, the password or the commands it holds).
type Backup struct {
	// Legacy marks the old service's backups in listings beside
	// capsule's own; always true.
	Legacy bool `json:"legacy"`
	// BackupID is the id as the old service stored it (mixed case).
	BackupID string `json:"backupId"`
	// Source is the state file's service.name (<namespace>/<pvc>).
	Source string `json:"source"`
	Engine string `json:"engine"`
	// Date is when the old service started the backup.
	Date   time.Time `json:"date"`
	Status string    `json:"status"`
	// RequestType is periodicbackuprequest or manualbackuprequest
	// (1.0.3 only); Rotation how many backups it kept.
	RequestType string `json:"requestType,omitempty"`
	Rotation    int    `json:"rotation,omitempty"`
	// StateFileVersion is the state file's statefileVersion (v1alpha1
	// in 1.0.3, none before).
	StateFileVersion string `json:"statefileVersion,omitempty"`
	// Shape is the old service's version whose state file this is:
	// 1.0.3 (statefile.json) or 1.0.2 (indexfile.json, 1.0.0 to 1.0.2).
	Shape string `json:"shape"`
	// StateFiles are the keys (from the bucket's root) of the backup's
	// state files, which hold secrets.
	StateFiles []string `json:"stateFiles"`
	// Dump is the key (from the bucket's root) of the pg_dump
	// --format=tar archive, when the bucket holds it; Bytes its size.
	Dump  string `json:"dump,omitempty"`
	Bytes int64  `json:"bytes"`
	// Checksum and Verification are "none": the old service recorded
	// neither.
	Checksum     string `json:"checksum"`
	Verification string `json:"verification"`
	// Problem says why a finished backup cannot be restored.
	Problem string `json:"problem,omitempty"`

	dump  string // the dump's key in the folder
	etag  string // the dump's version when listed
	state []string
}

// Restorable says whether the backup has a whole dump to restore.
func (b *Backup) Restorable() bool {
	return b.Status == StatusFinished && b.Problem == "" && b.dump != ""
}

// Ref is how a Restore or Verify request names the backup.
func (b *Backup) Ref() string { return requests.LegacyPrefix + b.BackupID }

// Damaged is a state file capsule does not believe, by key (from the
// bucket's root), with the reason. The reason never quotes the file.
type Damaged struct {
	Key    string `json:"key"`
	Reason string `json:"reason"`
}

// Listing is what List found.
type Listing struct {
	// Backups are newest first (by date, then id).
	Backups []Backup  `json:"backups"`
	Damaged []Damaged `json:"damaged,omitempty"`
}

// List returns the backups in the folder, newest first, and the state
// files it does not believe. Errors are the bucket's own.
func (s *Store) List(ctx context.Context) (*Listing, error) {
	return s.list(ctx, "")
}

// Find returns the backup with the given id (as stored, mixed case). It
// wraps ErrNotFound when the folder holds none, ErrDamaged when its
// state file is not believed.
func (s *Store) Find(ctx context.Context, id string) (*Backup, error) {
	if err := requests.ValidateLegacyID(id); err != nil {
		return nil, fmt.Errorf("legacy backup id: %w", err)
	}
	l, err := s.list(ctx, id+"/")
	if err != nil {
		return nil, err
	}
	for _, d := range l.Damaged {
		return nil, fmt.Errorf("legacy backup %s: %w: %s: %s", id, ErrDamaged, d.Key, d.Reason)
	}
	for i := range l.Backups {
		if l.Backups[i].BackupID == id {
			return &l.Backups[i], nil
		}
	}
	return nil, fmt.Errorf("%w: %s under %s/", ErrNotFound, id, s.dir)
}

// folder is the objects of one backup's folder.
type folder struct {
	name    string
	objects map[string]bucket.ObjectInfo // by name in the folder
}

func (s *Store) list(ctx context.Context, prefix string) (*Listing, error) {
	var folders []*folder
	err := bucket.Walk(ctx, s.b, prefix, func(o bucket.ObjectInfo) error {
		name, rest, ok := strings.Cut(o.Key, "/")
		if !ok || rest == "" || strings.Contains(rest, "/") {
			return nil // ping, or deeper than the old layout
		}
		if n := len(folders); n == 0 || folders[n-1].name != name {
			folders = append(folders, &folder{name: name, objects: map[string]bucket.ObjectInfo{}})
		}
		folders[len(folders)-1].objects[rest] = o
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list the old service's backups under %s/: %w", s.dir, err)
	}
	l := &Listing{Backups: []Backup{}}
	for _, f := range folders {
		b, d, err := s.read(ctx, f)
		switch {
		case err != nil:
			return nil, err
		case d != nil:
			l.Damaged = append(l.Damaged, *d)
		case b != nil:
			l.Backups = append(l.Backups, *b)
		}
	}
	sort.Slice(l.Backups, func(i, j int) bool {
		x, y := l.Backups[i], l.Backups[j]
		if !x.Date.Equal(y.Date) {
			return x.Date.After(y.Date)
		}
		return x.BackupID > y.BackupID
	})
	return l, nil
}

// stateFile is all of a state file that capsule reads. Everything else
// (the bucket's keys, the database's credentials, the commands the old
// service ran) is skipped by the decoder and never held.
type stateFile struct {
	BackupID         string `json:"backupId"`
	RequestType      string `json:"requestType"`
	Rotation         int    `json:"rotation"`
	Date             string `json:"date"`
	ServiceType      string `json:"serviceType"`
	Status           string `json:"status"`
	StatefileVersion string `json:"statefileVersion"`
	Service          struct {
		Name     string `json:"name"`
		Dumpfile string `json:"dumpfile"`
	} `json:"service"`
}

// read believes the backup in folder f, or says why not; nil, nil, nil
// when the folder holds no state file (a dump whose state file was
// deleted, or not the old service's).
func (s *Store) read(ctx context.Context, f *folder) (*Backup, *Damaged, error) {
	name, shape := StateFile, "1.0.3"
	if _, ok := f.objects[StateFile]; !ok {
		if _, ok := f.objects[IndexFile]; !ok {
			return nil, nil, nil
		}
		name, shape = IndexFile, "1.0.2"
	}
	key := f.name + "/" + name
	bad := func(format string, args ...any) (*Backup, *Damaged, error) {
		return nil, &Damaged{Key: s.Key(key), Reason: fmt.Sprintf(format, args...)}, nil
	}
	if err := requests.ValidateLegacyID(f.name); err != nil {
		return bad("its folder's name is not a backup id of the old service (postgresql-<letters and digits>)")
	}
	data, _, err := bucket.GetBytesLimit(ctx, s.b, key, MaxStateFile)
	switch {
	case errors.Is(err, bucket.ErrTooLarge):
		return bad("it is over %s: not read", bucket.FormatSize(MaxStateFile))
	case errors.Is(err, bucket.ErrNotFound):
		return nil, nil, nil // deleted since the listing
	case err != nil:
		return nil, nil, fmt.Errorf("read %s: %w", s.Key(key), err)
	}
	var sf stateFile
	if err := json.Unmarshal(data, &sf); err != nil {
		// Never the decoder's message: it may quote the file.
		return bad("%s", decodeError(err))
	}
	clear(data)
	switch {
	case requests.ValidateLegacyID(sf.BackupID) != nil:
		return bad("backupId is not a backup id of the old service (postgresql-<letters and digits>)")
	case sf.BackupID != f.name:
		return bad("backupId is not its folder's name")
	case sf.ServiceType != "postgresql":
		return bad("serviceType is not postgresql, the only service the old service backed up")
	case !knownStatus[sf.Status]:
		return bad("status is not one the old service wrote")
	case requests.ValidateName(sf.Service.Name) != nil:
		return bad("service.name is not a <namespace>/<name>")
	case name == StateFile && sf.StatefileVersion != "" && sf.StatefileVersion != "v1alpha1":
		return bad("statefileVersion is not v1alpha1, the only one the old service wrote")
	}
	date, err := time.Parse(time.RFC3339Nano, sf.Date)
	if err != nil {
		return bad("date is not an RFC 3339 time")
	}
	b := &Backup{
		Legacy: true, BackupID: sf.BackupID, Source: sf.Service.Name, Engine: Engine,
		Date: date.UTC(), Status: sf.Status, RequestType: sf.RequestType, Rotation: sf.Rotation,
		StateFileVersion: sf.StatefileVersion, Shape: shape, Checksum: "none", Verification: "none",
	}
	if b.RequestType != "" && b.RequestType != "periodicbackuprequest" && b.RequestType != "manualbackuprequest" {
		b.RequestType = "unknown"
	}
	for _, n := range []string{StateFile, IndexFile} {
		if _, ok := f.objects[n]; ok {
			b.state = append(b.state, f.name+"/"+n)
			b.StateFiles = append(b.StateFiles, s.Key(f.name+"/"+n))
		}
	}
	dump := sf.Service.Dumpfile
	switch {
	case dump == "" && b.Status == StatusFinished:
		b.Problem = "its state file names no dump"
	case dump == "":
	case !dumpName.MatchString(dump) || strings.Contains(dump, ".."):
		b.Problem = "its state file's service.dumpfile is not a file name in the backup's folder"
	default:
		o, ok := f.objects[dump]
		if !ok {
			if b.Status == StatusFinished {
				b.Problem = "its dump " + dump + " is not in the bucket"
			}
			break
		}
		b.dump, b.etag = f.name+"/"+dump, o.ETag
		b.Dump, b.Bytes = s.Key(b.dump), o.Size
		if o.Size == 0 && b.Status == StatusFinished {
			b.Problem = "its dump " + dump + " is empty"
		}
	}
	return b, nil, nil
}

// decodeError says why a state file is not JSON of the right shape
// without quoting any of it: a syntax error's message quotes the
// character it stopped at, a type error's the value.
func decodeError(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("not valid JSON (at byte %d)", syn.Offset)
	case errors.As(err, &typ) && typ.Field != "":
		return fmt.Sprintf("field %s has the wrong type", typ.Field)
	case errors.As(err, &typ):
		return "not a JSON object"
	}
	return "not valid JSON"
}

// DumpSizeError is a dump whose bytes did not add up to the size listed.
type DumpSizeError struct {
	Key        string
	Want, Read int64
}

func (e *DumpSizeError) Error() string {
	return fmt.Sprintf("dump %s: read %d bytes, the bucket listed %d: it changed or was cut since it was listed", e.Key, e.Read, e.Want)
}

// OpenDump streams the backup's pg_dump archive, as stored (the old
// service neither compressed nor checksummed it). The reader fails with
// a *DumpSizeError at the end when the bytes do not add up to b.Bytes,
// and never yields more than that.
func (s *Store) OpenDump(ctx context.Context, b *Backup) (io.ReadCloser, error) {
	if !b.Restorable() {
		if b.Problem != "" {
			return nil, fmt.Errorf("legacy backup %s: %s", b.BackupID, b.Problem)
		}
		return nil, fmt.Errorf("legacy backup %s ended %s: it has no whole dump", b.BackupID, b.Status)
	}
	body, info, err := s.b.Get(ctx, b.dump)
	if err != nil {
		return nil, fmt.Errorf("open dump %s: %w", b.Dump, err)
	}
	if b.etag != "" && info.ETag != "" && info.ETag != b.etag {
		body.Close()
		return nil, fmt.Errorf("open dump %s: %w since it was listed", b.Dump, bucket.ErrChanged)
	}
	return &dumpReader{body: body, key: b.Dump, left: b.Bytes, want: b.Bytes}, nil
}

type dumpReader struct {
	body       io.ReadCloser
	key        string
	left, want int64
	err        error
}

func (r *dumpReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if int64(len(p)) > r.left+1 {
		p = p[:r.left+1]
	}
	n, err := r.body.Read(p)
	if int64(n) > r.left {
		n = int(r.left)
		err = &DumpSizeError{Key: r.key, Want: r.want, Read: r.want + 1}
	}
	r.left -= int64(n)
	if errors.Is(err, io.EOF) && r.left > 0 {
		err = &DumpSizeError{Key: r.key, Want: r.want, Read: r.want - r.left}
	}
	if err != nil {
		r.err = err
	}
	return n, err
}

func (r *dumpReader) Close() error {
	if r.err == nil {
		r.err = errors.New("closed")
	}
	return r.body.Close()
}

// DeleteStateFiles deletes the backup's state files, the keys its
// folder was listed with (never a key read from a file). The dump stays.
func (s *Store) DeleteStateFiles(ctx context.Context, b *Backup) ([]string, error) {
	var done []string
	for _, k := range b.state {
		if err := s.b.Delete(ctx, k); err != nil {
			return done, fmt.Errorf("delete %s: %w", s.Key(k), err)
		}
		done = append(done, s.Key(k))
	}
	return done, nil
}

// SecretsWarning tells the operator what the state files hold and how to
// remove them. keys are the state files still in the bucket (from the
// bucket's root); remove is the command that deletes a key when followed
// by it ("aws s3 rm s3://BUCKET/"; that with a placeholder when empty).
func SecretsWarning(keys []string, remove string) string {
	var b strings.Builder
	b.WriteString("WARNING: the old service's state files (statefile.json, indexfile.json) hold the bucket's access keys and the database password in plain text,\n")
	b.WriteString("and the shell commands it ran. capsule reads only the fields it needs (id, date, status, service name, dump file), never runs those commands\n")
	b.WriteString("and copies none of those values. Remove the files once their backups are imported:\n")
	b.WriteString("  capsule legacy import --delete-statefiles\n")
	if len(keys) > 0 {
		b.WriteString("or by hand:\n")
		if remove == "" {
			remove = "aws s3 rm s3://<bucket>/"
		}
		for _, k := range keys {
			fmt.Fprintf(&b, "  %s%s\n", remove, k)
		}
	}
	b.WriteString("and, since they were stored in the bucket, rotate the bucket's keys and the database password.\n")
	return b.String()
}
