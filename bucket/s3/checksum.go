package s3

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// checksumModes decides when the client sends request checksums and
// validates response ones. On AWS (no endpoint, or an amazonaws.com one)
// the SDK's defaults stay: CRC32 on every write that supports it. Elsewhere
// both become "when required", as they were before aws-sdk-go-v2 changed
// its defaults in 2025: several S3-compatible servers refuse the checksum
// headers or the aws-chunked bodies that carry them. The environment
// variables AWS_REQUEST_CHECKSUM_CALCULATION and
// AWS_RESPONSE_CHECKSUM_VALIDATION, when set, win either way (the SDK's
// configuration cannot tell a default from a choice).
func checksumModes(endpoint string, cfg aws.Config) (aws.RequestChecksumCalculation, aws.ResponseChecksumValidation) {
	req, resp := cfg.RequestChecksumCalculation, cfg.ResponseChecksumValidation
	if isAWSEndpoint(endpoint) {
		return req, resp
	}
	if os.Getenv("AWS_REQUEST_CHECKSUM_CALCULATION") == "" {
		req = aws.RequestChecksumCalculationWhenRequired
	}
	if os.Getenv("AWS_RESPONSE_CHECKSUM_VALIDATION") == "" {
		resp = aws.ResponseChecksumValidationWhenRequired
	}
	return req, resp
}

// partChecksum is the checksum of multipart uploads' parts: CRC32 when the
// client sends checksums whenever it can, none when only where required
// (a server that refuses them would refuse the upload). The artifact's
// sha256 in the backup's index covers the bytes either way.
func (b *Bucket) partChecksum() types.ChecksumAlgorithm {
	if b.sums == aws.RequestChecksumCalculationWhenRequired {
		return ""
	}
	return types.ChecksumAlgorithmCrc32
}

// isAWSEndpoint says whether endpoint is AWS's S3: none given, or a host
// under amazonaws.com (amazonaws.com.cn in China).
func isAWSEndpoint(endpoint string) bool {
	if endpoint == "" {
		return true
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return false
	}
	h := strings.ToLower(u.Hostname())
	return strings.HasSuffix(h, ".amazonaws.com") || strings.HasSuffix(h, ".amazonaws.com.cn")
}

// ChecksumProbe is what ProbeChecksums found out about the server's
// handling of flexible checksums (x-amz-checksum-crc32).
type ChecksumProbe struct {
	// Client says when capsule's client sends request checksums: "when
	// supported" (every write, the SDK's default, kept on AWS) or "when
	// required" (only where S3 demands one: other endpoints).
	Client string `json:"client"`
	// Accepted is true when the server took a PutObject that carried a
	// CRC32 checksum; Refusal is its error otherwise.
	Accepted bool   `json:"accepted"`
	Refusal  string `json:"refusal,omitempty"`
	// Returned is true when a GET with checksum mode on gave the CRC32
	// back; Match when it was the one sent.
	Returned bool `json:"returned"`
	Match    bool `json:"match"`
}

// ClientSendsAlways is true when capsule's client sends checksums on every
// write: then a server that refuses them refuses capsule's writes.
func (p ChecksumProbe) ClientSendsAlways() bool { return p.Client == "when supported" }

func (p ChecksumProbe) String() string {
	var s string
	switch {
	case !p.Accepted:
		s = "refuses a write with a CRC32 checksum (" + p.Refusal + ")"
	case p.Returned && p.Match:
		s = "accepts a CRC32 checksum on a write and returns it on a read"
	case p.Returned:
		s = "accepts a CRC32 checksum on a write but returns a different one on a read"
	default:
		s = "accepts a CRC32 checksum on a write, returns none on a read"
	}
	return s + "; capsule's client sends checksums " + p.Client
}

// ProbeChecksums writes key with a CRC32 checksum, reads it back with
// checksum mode on, and deletes it. An error means the probe could not
// run; a refusal of the checksum is a finding, in the result.
func (b *Bucket) ProbeChecksums(ctx context.Context, key string) (ChecksumProbe, error) {
	p := ChecksumProbe{Client: "when required"}
	if b.sums != aws.RequestChecksumCalculationWhenRequired {
		p.Client = "when supported"
	}
	data := []byte("capsule checksum probe\n")
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc32.ChecksumIEEE(data))
	want := base64.StdEncoding.EncodeToString(sum[:])
	defer func() { _ = b.Delete(context.WithoutCancel(ctx), key) }()
	_, err := b.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: &b.name, Key: &key, Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))),
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
	})
	if err != nil {
		code, status := errorCode(err)
		if transient(err) || status == 0 {
			return p, translate("probe checksums: put", key, err)
		}
		p.Refusal = fmt.Sprintf("%d %s", status, code)
		return p, nil
	}
	p.Accepted = true
	out, err := b.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &b.name, Key: &key, ChecksumMode: types.ChecksumModeEnabled})
	if err != nil {
		return p, translate("probe checksums: get", key, err)
	}
	_, _ = io.Copy(io.Discard, out.Body)
	out.Body.Close()
	got := aws.ToString(out.ChecksumCRC32)
	p.Returned, p.Match = got != "", got == want
	return p, nil
}
