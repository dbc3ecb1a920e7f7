package faultproxy

import (
	"net/http"
	"strings"
)

// Op is an S3 operation as the proxy recognises it from a path-style
// request.
type Op string

// The operations. ConditionalPut is a PutObject with If-None-Match or
// If-Match (a claim, a lease renewal, an index or a result); PutObject is
// one without.
const (
	GetObject               Op = "GetObject"
	HeadObject              Op = "HeadObject"
	PutObject               Op = "PutObject"
	ConditionalPut          Op = "ConditionalPut"
	DeleteObject            Op = "DeleteObject"
	CreateMultipartUpload   Op = "CreateMultipartUpload"
	UploadPart              Op = "UploadPart"
	CompleteMultipartUpload Op = "CompleteMultipartUpload"
	AbortMultipartUpload    Op = "AbortMultipartUpload"
	ListParts               Op = "ListParts"
	ListObjectsV2           Op = "ListObjectsV2"
	ListObjects             Op = "ListObjects"
	ListMultipartUploads    Op = "ListMultipartUploads"
	DeleteObjects           Op = "DeleteObjects"
	// BucketOp is any other request on a bucket (CreateBucket,
	// HeadBucket, GetBucketLocation, ...); ServiceOp one on no bucket
	// (ListBuckets).
	BucketOp  Op = "BucketOp"
	ServiceOp Op = "ServiceOp"
	// OtherOp is a request on an object that none of the above matches.
	OtherOp Op = "OtherOp"
)

// Classify names r's operation and the key it is about: the object's key
// for object operations (without the bucket), the prefix parameter for
// listings, "" for other bucket and service operations.
func Classify(r *http.Request) (Op, string) {
	path := strings.TrimPrefix(r.URL.Path, "/")
	bucket, key, _ := strings.Cut(path, "/")
	q := r.URL.Query()
	if bucket == "" {
		return ServiceOp, ""
	}
	if key == "" {
		switch {
		case r.Method == http.MethodGet && q.Get("list-type") == "2":
			return ListObjectsV2, q.Get("prefix")
		case r.Method == http.MethodGet && q.Has("uploads"):
			return ListMultipartUploads, q.Get("prefix")
		case r.Method == http.MethodPost && q.Has("delete"):
			return DeleteObjects, ""
		case r.Method == http.MethodGet && (len(q) == 0 || q.Has("prefix") || q.Has("marker") || q.Has("delimiter")):
			return ListObjects, q.Get("prefix")
		}
		return BucketOp, ""
	}
	switch r.Method {
	case http.MethodGet:
		if q.Has("uploadId") {
			return ListParts, key
		}
		return GetObject, key
	case http.MethodHead:
		return HeadObject, key
	case http.MethodPut:
		switch {
		case q.Has("partNumber") && q.Has("uploadId"):
			return UploadPart, key
		case r.Header.Get("If-None-Match") != "" || r.Header.Get("If-Match") != "":
			return ConditionalPut, key
		}
		return PutObject, key
	case http.MethodPost:
		switch {
		case q.Has("uploads"):
			return CreateMultipartUpload, key
		case q.Has("uploadId"):
			return CompleteMultipartUpload, key
		}
	case http.MethodDelete:
		if q.Has("uploadId") {
			return AbortMultipartUpload, key
		}
		return DeleteObject, key
	}
	return OtherOp, key
}

// Filter selects requests by operation and key. The zero Filter selects
// every request.
type Filter struct {
	// Ops are the operations selected; empty means all.
	Ops []Op
	// Keys selects by the key Classify gives; nil means all.
	Keys func(key string) bool
}

func (f Filter) matches(op Op, key string) bool {
	if len(f.Ops) > 0 {
		found := false
		for _, o := range f.Ops {
			found = found || o == op
		}
		if !found {
			return false
		}
	}
	return f.Keys == nil || f.Keys(key)
}

// Artifacts selects the data of backups: keys with a backups/ segment that
// do not end in .json (so not an index, nor a verification record).
func Artifacts(key string) bool {
	return strings.Contains("/"+key, "/backups/") && !strings.HasSuffix(key, ".json")
}

// Control selects capsule's control objects: keys with a requests/,
// leases/, results/, cancel/ or locks/ segment, outside backups/.
func Control(key string) bool {
	k := "/" + key
	if strings.Contains(k, "/backups/") {
		return false
	}
	for _, seg := range []string{"/requests/", "/leases/", "/results/", "/cancel/", "/locks/"} {
		if strings.Contains(k, seg) {
			return true
		}
	}
	return false
}

// Under selects keys with the segment dir (e.g. "leases/") anywhere, so
// that it matches whatever prefix the client puts before it.
func Under(dir string) func(key string) bool {
	return func(key string) bool { return strings.Contains("/"+key, "/"+dir) }
}
