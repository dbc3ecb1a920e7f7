package faultproxy

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// Quirk makes the proxy act like an S3-compatible server that departs from
// S3 in one known way, so that a test can show what capsule does on such a
// server without running it.
type Quirk string

const (
	// IgnoreIfNoneMatch passes writes (PutObject, CompleteMultipartUpload)
	// on without their If-None-Match header, as Google Cloud Storage's S3
	// interface ignores it: a create-only write succeeds and overwrites.
	IgnoreIfNoneMatch Quirk = "ignore-if-none-match"
	// IgnoreIfMatch passes writes on without their If-Match header: an
	// If-Match write with a stale ETag succeeds.
	IgnoreIfMatch Quirk = "ignore-if-match"
	// UploadsByKeyOnly answers a ListMultipartUploads with a prefix with
	// an empty list, and one without a prefix with every upload. MinIO
	// lists open uploads only when the prefix is a whole key; capsule asks
	// for folders, where MinIO answers nothing.
	UploadsByKeyOnly Quirk = "uploads-by-key-only"
	// RejectChecksums refuses, with 400 InvalidArgument, a request that
	// carries a flexible checksum (an x-amz-checksum-* header,
	// x-amz-sdk-checksum-algorithm, x-amz-trailer, or an aws-chunked
	// body), as several S3-compatible servers refuse the CRC32 checksums
	// that aws-sdk-go-v2 sends by default since 2025.
	RejectChecksums Quirk = "reject-checksums"
	// RejectConditional refuses a write with If-None-Match or If-Match
	// with 501 NotImplemented, as Backblaze B2's S3 interface does.
	RejectConditional Quirk = "reject-conditional"
)

// Credentials sign a request again after a quirk removed one of its
// headers (SigV4 signs If-None-Match and If-Match), so that the server
// accepts it as a gateway that ignores the header would pass it on.
type Credentials struct {
	AccessKey, SecretKey, Region string
}

// SetQuirks replaces the quirks. IgnoreIfNoneMatch and IgnoreIfMatch need
// c; the others ignore it. Quirks apply after rules and holds: a request
// that a rule faults before forwarding is not changed.
func (p *Proxy) SetQuirks(c Credentials, quirks ...Quirk) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.creds = c
	p.quirks = slices.Clone(quirks)
}

func (p *Proxy) hasQuirk(q Quirk) (Credentials, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.creds, slices.Contains(p.quirks, q)
}

func (p *Proxy) countQuirk(q Quirk) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.quirked[q]++
}

// quirk applies the quirks to r: it answers r itself and returns true, or
// changes r's headers (signing it again) and returns false so that r is
// forwarded.
func (p *Proxy) quirk(w http.ResponseWriter, r *http.Request, op Op, key string, seq int) bool {
	if _, ok := p.hasQuirk(RejectChecksums); ok {
		if h := checksumHeader(r); h != "" {
			p.countQuirk(RejectChecksums)
			s3Error(w, r, http.StatusBadRequest, "InvalidArgument", "Unsupported header '"+h+"' received for this API call.", seq)
			return true
		}
	}
	conditional := (op == ConditionalPut || op == CompleteMultipartUpload) &&
		(r.Header.Get("If-None-Match") != "" || r.Header.Get("If-Match") != "")
	if _, ok := p.hasQuirk(RejectConditional); ok && conditional {
		p.countQuirk(RejectConditional)
		s3Error(w, r, http.StatusNotImplemented, "NotImplemented", "A header you provided implies functionality that is not implemented.", seq)
		return true
	}
	if _, ok := p.hasQuirk(UploadsByKeyOnly); ok && op == ListMultipartUploads && key != "" {
		p.countQuirk(UploadsByKeyOnly)
		bucket, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		w.Header().Set("Content-Type", "application/xml")
		w.Header().Set("Date", time.Now().UTC().Format(http.TimeFormat))
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
			`<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>%s</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker><Prefix>%s</Prefix><MaxUploads>1000</MaxUploads><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>`,
			html.EscapeString(bucket), html.EscapeString(key))
		return true
	}
	if !conditional {
		return false
	}
	var drop []string
	creds, none := p.hasQuirk(IgnoreIfNoneMatch)
	if none && r.Header.Get("If-None-Match") != "" {
		drop = append(drop, "If-None-Match")
		p.countQuirk(IgnoreIfNoneMatch)
	}
	if _, match := p.hasQuirk(IgnoreIfMatch); match && r.Header.Get("If-Match") != "" {
		drop = append(drop, "If-Match")
		p.countQuirk(IgnoreIfMatch)
	}
	if len(drop) == 0 {
		return false
	}
	for _, h := range drop {
		r.Header.Del(h)
	}
	if err := resign(r.Context(), r, creds); err != nil {
		s3Error(w, r, http.StatusInternalServerError, "InternalError", "faultproxy could not sign the request again: "+err.Error(), seq)
		return true
	}
	return false
}

// checksumHeader names the first flexible-checksum header of r, or "".
func checksumHeader(r *http.Request) string {
	for name := range r.Header {
		l := strings.ToLower(name)
		if (strings.HasPrefix(l, "x-amz-checksum-") && l != "x-amz-checksum-mode") || l == "x-amz-sdk-checksum-algorithm" || l == "x-amz-trailer" {
			return l
		}
	}
	if strings.Contains(r.Header.Get("Content-Encoding"), "aws-chunked") {
		return "content-encoding: aws-chunked"
	}
	return ""
}

// resign signs r again with SigV4, as the S3 client did (its payload hash,
// S3's unescaped paths), now without the headers a quirk removed.
func resign(ctx context.Context, r *http.Request, c Credentials) error {
	if c.AccessKey == "" || c.Region == "" {
		return fmt.Errorf("quirk without credentials: call SetQuirks with the server's access key and region")
	}
	hash := r.Header.Get("X-Amz-Content-Sha256")
	if hash == "" {
		return fmt.Errorf("request without X-Amz-Content-Sha256")
	}
	r.Header.Del("Authorization")
	r.Header.Del("X-Amz-Date")
	creds := aws.Credentials{AccessKeyID: c.AccessKey, SecretAccessKey: c.SecretKey}
	return v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true }).
		SignHTTP(ctx, creds, r, hash, "s3", c.Region, time.Now())
}
