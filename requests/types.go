package requests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"
)

// APIVersion is the version of every object capsule writes.
const APIVersion = "capsule/v1"

// Kind of a request.
type Kind string

// The request kinds.
const (
	KindBackup  Kind = "Backup"
	KindRestore Kind = "Restore"
	KindVerify  Kind = "Verify"
)

// Status of a request.
type Status string

// The statuses: a request is pending until a worker claims it, running
// while a lease names a holder, and ends in one of the other four.
const (
	StatusPending   Status = "pending"
	StatusRunning   Status = "running"
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
	StatusRejected  Status = "rejected"
	StatusCanceled  Status = "canceled"
)

// DefaultCluster is the cluster of requests that name none.
const DefaultCluster = "default"

// Request is what a client writes to requests/<id>.json. It is never
// modified; the worker deletes it once the result is written.
type Request struct {
	APIVersion string `json:"apiVersion"`
	Kind       Kind   `json:"kind"`
	ID         string `json:"id"`
	// Cluster groups backups; "default" when empty.
	Cluster string `json:"cluster,omitempty"`
	// Source names the configured source to back up (Backup).
	Source string `json:"source,omitempty"`
	// BackupID names the backup to restore or verify (Restore, Verify).
	BackupID string `json:"backupId,omitempty"`
	// PointInTime, in a Restore instead of BackupID, names a moment of a
	// PostgreSQL source with point-in-time recovery: the worker recovers
	// it from the newest base backup that can reach it and the source's
	// WAL in the bucket.
	PointInTime *PointInTime `json:"pointInTime,omitempty"`
	// Target names the source to restore into (Restore; default: the
	// backup's source) or whose server hosts the scratch copy (Verify).
	Target string `json:"target,omitempty"`
	// DropPrevious drops the replaced data after a restore's swap.
	DropPrevious bool `json:"dropPrevious,omitempty"`
	// AllowUnsigned accepts a backup whose index has no signature (one
	// made before signing) for this Restore or Verify, where the worker
	// checks signatures; in a point-in-time Restore, also base backups
	// and WAL objects without one. A signature that does not check out
	// is never accepted.
	AllowUnsigned bool `json:"allowUnsigned,omitempty"`
	// Options are engine-specific restore options.
	Options map[string]string `json:"options,omitempty"`
	// Labels are recorded in the backup's index.
	Labels map[string]string `json:"labels,omitempty"`
	// Plan names the scheduler plan that made the request, if any.
	Plan string `json:"plan,omitempty"`
	// CreatedAt is when the client made the request (informational).
	CreatedAt time.Time `json:"createdAt,omitzero"`
}

// PointInTime is a Restore's point in time: a source, and exactly one
// of Time, LSN and Latest.
type PointInTime struct {
	// Source is the source whose base backups and WAL are restored; the
	// restore goes into it unless the request names a target.
	Source string `json:"source"`
	// Time recovers every transaction committed up to this moment.
	Time time.Time `json:"time,omitzero"`
	// LSN recovers up to this WAL position (such as "0/3000060").
	LSN string `json:"lsn,omitempty"`
	// Latest recovers up to the newest WAL the bucket holds.
	Latest bool `json:"latest,omitempty"`
}

// UnmarshalJSON decodes as strictly as a request: field names exactly,
// no unknown field, none twice.
func (p *PointInTime) UnmarshalJSON(data []byte) error {
	type plain PointInTime
	return strictUnmarshal(data, (*plain)(p))
}

// lsnPattern is a WAL position as PostgreSQL writes it.
var lsnPattern = regexp.MustCompile(`^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$`)

// validate checks p, naming its bad field as pointInTime.<field>.
func (p *PointInTime) validate() error {
	if p.Source == "" {
		return fieldErr("pointInTime.source", "is required: the source to restore to a point in time")
	}
	if err := ValidateName(p.Source); err != nil {
		return fieldErr("pointInTime.source", "%v", err)
	}
	n := 0
	for _, set := range []bool{!p.Time.IsZero(), p.LSN != "", p.Latest} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fieldErr("pointInTime", "give exactly one of time, lsn and latest")
	}
	if p.LSN != "" && (!lsnPattern.MatchString(p.LSN) || strings.Trim(p.LSN, "0/") == "") {
		return fieldErr("pointInTime.lsn", "%q is not a WAL position such as \"0/3000060\"", clipString(p.LSN))
	}
	return nil
}

// Parse decodes and validates a request object. Unknown fields are
// refused (a request never carries connection details or secrets), and
// so is anything after the object.
func Parse(data []byte) (*Request, error) {
	var r Request
	if err := strictUnmarshal(data, &r); err != nil {
		return nil, err
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

// Validate checks the request, naming the first bad field.
func (r *Request) Validate() error {
	if r.APIVersion != APIVersion {
		return fieldErr("apiVersion", "must be %q, got %q", APIVersion, r.APIVersion)
	}
	if err := ValidateID(r.ID); err != nil {
		return fieldErr("id", "%v", err)
	}
	if r.Cluster != "" {
		if err := ValidateName(r.Cluster); err != nil {
			return fieldErr("cluster", "%v", err)
		}
	}
	if err := validateLabels(r.Labels); err != nil {
		return err
	}
	if r.Plan != "" {
		if err := ValidateName(r.Plan); err != nil {
			return fieldErr("plan", "%v", err)
		}
	}
	switch r.Kind {
	case KindBackup:
		if r.Source == "" {
			return fieldErr("source", "is required for a Backup")
		}
		if err := ValidateName(r.Source); err != nil {
			return fieldErr("source", "%v", err)
		}
		for f, set := range map[string]bool{"backupId": r.BackupID != "", "pointInTime": r.PointInTime != nil, "target": r.Target != "", "dropPrevious": r.DropPrevious, "options": len(r.Options) > 0, "allowUnsigned": r.AllowUnsigned} {
			if set {
				return fieldErr(f, "is not allowed in a Backup")
			}
		}
	case KindRestore, KindVerify:
		switch {
		case r.PointInTime != nil && r.Kind == KindVerify:
			return fieldErr("pointInTime", "is not allowed in a Verify")
		case r.PointInTime != nil && r.BackupID != "":
			return fieldErr("pointInTime", "give backupId or pointInTime, not both")
		case r.PointInTime != nil:
			if err := r.PointInTime.validate(); err != nil {
				return err
			}
		case r.BackupID == "" && r.Kind == KindRestore:
			return fieldErr("backupId", "is required for a Restore (or pointInTime)")
		case r.BackupID == "":
			return fieldErr("backupId", "is required for a %s", r.Kind)
		default:
			if err := validateBackupRef(r.BackupID); err != nil {
				return fieldErr("backupId", "%v", err)
			}
		}
		if r.Source != "" {
			return fieldErr("source", "is not allowed in a %s (the backup or pointInTime names it; use target)", r.Kind)
		}
		if r.Target != "" {
			if err := ValidateName(r.Target); err != nil {
				return fieldErr("target", "%v", err)
			}
		}
		if r.Kind == KindVerify && r.DropPrevious {
			return fieldErr("dropPrevious", "is not allowed in a Verify")
		}
		for k := range r.Options {
			if !optionKey.MatchString(k) {
				return fieldErr("options", "bad key %q", k)
			}
		}
	case "":
		return fieldErr("kind", "is required (Backup, Restore or Verify)")
	default:
		return fieldErr("kind", "unknown kind %q (want Backup, Restore or Verify)", r.Kind)
	}
	return nil
}

// The facts of a request kind, defined here once: what it acts on, the
// backup it refers to, and what its result records of it.

// SourceName returns the configured source the request acts on: a
// Backup's source, a Restore's or Verify's target (empty when it names
// none: the backup's own source, or no scratch server; a point-in-time
// Restore's own source).
func (r *Request) SourceName() string {
	if r.Kind == KindBackup {
		return r.Source
	}
	if r.Target == "" && r.PointInTime != nil {
		return r.PointInTime.Source
	}
	return r.Target
}

// BackupRef returns the backup the request refers to: the one a Backup
// makes (its id is the request's), the one a Restore or Verify reads
// (empty for a point-in-time Restore: the worker picks its base backup).
func (r *Request) BackupRef() string {
	if r.Kind == KindBackup {
		return r.ID
	}
	return r.BackupID
}

// Describe records in res what a result says of its request: its kind,
// cluster, the source a Backup read and the backup a Restore or Verify
// read (a Backup's result gets its backup id once it is committed; a
// point-in-time Restore's names the source it recovers, and its backup
// id once the worker picked the base backup).
func (r *Request) Describe(res *Result) {
	res.RequestKind, res.Cluster, res.Source, res.BackupID = r.Kind, r.ClusterOrDefault(), r.Source, r.BackupID
	if r.PointInTime != nil {
		res.Source = r.PointInTime.Source
	}
}

// ClusterOrDefault returns the request's cluster, or DefaultCluster.
func (r *Request) ClusterOrDefault() string {
	if r.Cluster == "" {
		return DefaultCluster
	}
	return r.Cluster
}

// Lease is leases/<id>.json: who works on a request now. Every write of it
// differs (token, times, progress), so every write has a new ETag.
type Lease struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"` // "Lease"
	ID         string `json:"id"`
	// Holder names the worker (host/pid/random).
	Holder string `json:"holder"`
	// Token is fresh for every attempt.
	Token   string `json:"token"`
	Attempt int    `json:"attempt"`
	// Handbacks counts attempts that ended by handing the lease back at a
	// worker's shutdown: they do not count against the attempt limit.
	Handbacks int `json:"handbacks,omitempty"`
	// DurationMillis is the lease's length: it is expired when the
	// bucket's clock says its last write is older than this.
	DurationMillis int64 `json:"durationMillis"`
	// AcquiredAt and RenewedAt are the holder's clock: informational only.
	AcquiredAt time.Time `json:"acquiredAt"`
	RenewedAt  time.Time `json:"renewedAt"`
	// Renewals counts the holder's renewals of this attempt.
	Renewals int       `json:"renewals"`
	Progress *Progress `json:"progress,omitempty"`
	// Released is set when a holder hands the lease back at shutdown: the
	// next worker may take it over at once.
	Released bool `json:"released,omitempty"`
	// Finishing is set on the last renewal before the result is written.
	Finishing bool `json:"finishing,omitempty"`
}

// Duration returns the lease's length.
func (l *Lease) Duration() time.Duration { return time.Duration(l.DurationMillis) * time.Millisecond }

// Progress is a running request's latest progress, kept in its lease.
type Progress struct {
	Phase string `json:"phase,omitempty"`
	// Artifact is the artifact being written or read.
	Artifact string `json:"artifact,omitempty"`
	// Bytes is the raw bytes the engine wrote (backup) or read (restore).
	Bytes int64 `json:"bytes"`
	// StoredBytes is the compressed bytes that reached the bucket.
	StoredBytes int64 `json:"storedBytes"`
	// Done and Total count an engine's items (files, tables, keys).
	Done  int64 `json:"done,omitempty"`
	Total int64 `json:"total,omitempty"`
	// TotalBytes is how many raw bytes the run (or its current pass)
	// should move, 0 when unknown: a restore's recorded size, or a
	// backup's estimate from its engine (Estimated). See Percent.
	TotalBytes int64 `json:"totalBytes,omitempty"`
	// Estimated says that TotalBytes is the engine's estimate (a
	// database's size on disk), not a recorded size.
	Estimated bool `json:"estimated,omitempty"`
	// Pass counts the reads of the backup's artifacts from 1, for an
	// engine that reads them twice (check, then load); Bytes counts the
	// current pass.
	Pass int `json:"pass,omitempty"`
	// StartedAt is when the run (or its current pass) started, on the
	// holder's clock, like UpdatedAt: Rate divides by their difference.
	StartedAt time.Time `json:"startedAt,omitzero"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// Result is results/<id>.json: how a request ended. Written once.
type Result struct {
	APIVersion  string    `json:"apiVersion"`
	Kind        string    `json:"kind"` // "Result"
	ID          string    `json:"id"`
	RequestKind Kind      `json:"requestKind,omitempty"`
	Status      Status    `json:"status"`
	Cluster     string    `json:"cluster,omitempty"`
	Source      string    `json:"source,omitempty"`
	BackupID    string    `json:"backupId,omitempty"`
	Error       string    `json:"error,omitempty"`
	Attempts    int       `json:"attempts"`
	Worker      string    `json:"worker,omitempty"`
	StartedAt   time.Time `json:"startedAt,omitzero"`
	FinishedAt  time.Time `json:"finishedAt"`
	// Bytes and StoredBytes: raw and stored sizes moved.
	Bytes       int64 `json:"bytes,omitempty"`
	StoredBytes int64 `json:"storedBytes,omitempty"`
	// DowntimeMillis is a restore's swap time.
	DowntimeMillis int64 `json:"downtimeMillis,omitempty"`
	// Details is kind- and engine-specific (a verification's checks, a
	// restore's kept previous data).
	Details map[string]any `json:"details,omitempty"`
}

// Cancel is cancel/<id>.json: a client's wish to stop a request.
type Cancel struct {
	APIVersion  string    `json:"apiVersion"`
	Kind        string    `json:"kind"` // "Cancel"
	ID          string    `json:"id"`
	Reason      string    `json:"reason,omitempty"`
	RequestedAt time.Time `json:"requestedAt"`
}

// Ended reports whether s is a final status.
func (s Status) Ended() bool {
	switch s {
	case StatusSucceeded, StatusFailed, StatusRejected, StatusCanceled:
		return true
	}
	return false
}

// FieldError names the bad field of an object.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

var (
	idPattern   = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,127}$`)
	namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$`)
	optionKey   = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,63}$`)
	labelKey    = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$`)
)

// ValidateID checks a request or backup id: [a-z0-9][a-z0-9._-]{0,127}.
func ValidateID(id string) error {
	if id == "" {
		return fmt.Errorf("is empty")
	}
	if !idPattern.MatchString(id) {
		return fmt.Errorf("%q is not a valid id: want 1-128 of [a-z0-9._-], starting with a letter or digit", clipString(id))
	}
	return nil
}

// ValidateName checks a cluster, source or plan name: segments of
// [A-Za-z0-9._-] separated by single slashes, at most 200 bytes.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("is empty")
	}
	if len(name) > 200 || !namePattern.MatchString(name) {
		return fmt.Errorf("%q is not a valid name: want segments of [A-Za-z0-9._-] separated by '/', at most 200 bytes", clipString(name))
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "." || seg == ".." {
			return fmt.Errorf("%q is not a valid name: '.' and '..' segments are not allowed", name)
		}
	}
	return nil
}

func validateLabels(labels map[string]string) error {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) > 64 {
		return fieldErr("labels", "at most 64 labels, got %d", len(keys))
	}
	for _, k := range keys {
		if !labelKey.MatchString(k) {
			return fieldErr("labels", "bad key %q", clipString(k))
		}
		if len(labels[k]) > 256 {
			return fieldErr("labels", "value of %q is longer than 256 bytes", k)
		}
	}
	return nil
}

// bom is the UTF-8 byte order mark some editors put first in a file.
var bom = []byte("\xef\xbb\xbf")

// strictUnmarshal decodes one JSON object into the struct into points
// to. Unlike encoding/json it matches field names exactly (json matches
// them case-insensitively, so "Source" or "apiversion" would be taken
// silently), refuses a field given twice, and names the field in every
// error, a bad time included. A leading byte order mark is skipped.
func strictUnmarshal(data []byte, into any) error {
	data = bytes.TrimPrefix(data, bom)
	v := reflect.ValueOf(into).Elem()
	fields := map[string]int{}
	for i := range v.NumField() {
		name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			fields[name] = i
		}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return describeJSONError(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("invalid JSON: want an object ({...}), got %v", tokenKind(tok))
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return describeJSONError(err)
		}
		name, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return describeJSONError(err)
		}
		i, ok := fields[name]
		if !ok {
			for known := range fields {
				if strings.EqualFold(known, name) {
					return fieldErr(name, "unknown field: field names are case-sensitive; did you mean %q?", known)
				}
			}
			return fieldErr(clipString(name), "unknown field (requests name a configured source; they never carry connection details)")
		}
		if seen[name] {
			return fieldErr(name, "given twice")
		}
		seen[name] = true
		f := v.Field(i)
		if err := json.Unmarshal(raw, f.Addr().Interface()); err != nil {
			var fe *FieldError
			if errors.As(err, &fe) {
				// A nested object's field: named by its path.
				return fieldErr(name+"."+fe.Field, "%s", fe.Msg)
			}
			return fieldValueErr(name, f.Type(), raw, err)
		}
	}
	if _, err := dec.Token(); err != nil {
		return describeJSONError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("invalid JSON: data after the object")
	}
	return nil
}

func tokenKind(tok json.Token) string {
	switch tok.(type) {
	case json.Delim:
		return "an array"
	case string:
		return "a string"
	case float64, json.Number:
		return "a number"
	case bool:
		return "a boolean"
	}
	return "null"
}

var timeType = reflect.TypeOf(time.Time{})

// fieldValueErr names field in the error of decoding its value raw.
func fieldValueErr(field string, t reflect.Type, raw json.RawMessage, err error) error {
	if t == timeType {
		return fieldErr(field, "must be an RFC 3339 time such as \"2026-01-02T15:04:05Z\", got %s", clipString(string(raw)))
	}
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		want := t.Kind().String()
		switch t.Kind() {
		case reflect.Map:
			want = "object of " + t.Elem().Kind().String() + "s"
		case reflect.Int, reflect.Int64:
			want = "integer"
		case reflect.Bool:
			want = "boolean (true or false)"
		}
		return fieldErr(field, "must be a %s, got a JSON %s", want, typ.Value)
	}
	return fieldErr(field, "%s", strings.TrimPrefix(err.Error(), "json: "))
}

func describeJSONError(err error) error {
	var syn *json.SyntaxError
	switch {
	case errors.As(err, &syn):
		return fmt.Errorf("invalid JSON at byte %d: %v", syn.Offset, syn)
	case err == io.EOF:
		return fmt.Errorf("invalid JSON: empty")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("invalid JSON: it ends before the object does")
	}
	return fmt.Errorf("invalid JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
}

func clipString(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
