// Package faultproxy is an HTTP proxy for tests that sits in front of an S3
// server (internal/s3test's versitygw) and makes a chosen share of the calls
// fail the ways a real network and a real store fail: refused with 503
// SlowDown or 500, the connection reset before the request reaches the
// server, the request applied but its answer lost to a reset or replaced by a
// 500, a GET's body cut part way, or an answer held back.
//
// A Proxy listens on a free loopback port; a client points its endpoint at
// Proxy.URL instead of the server's. Requests go to the server unchanged,
// Host header included, so SigV4 signatures made for the proxy's address
// still verify. Each request is classified (Op: GetObject, ConditionalPut,
// UploadPart, CompleteMultipartUpload, ListObjectsV2, ...) from its method,
// query and headers, and its object key is taken from the path (path-style
// addressing). The first Rule whose filter matches decides, with its Rate,
// whether the request gets one of the rule's fault Kinds. Rules change at
// runtime (SetRules, Off), Stats counts every request and fault by Op and
// Kind, and Hold parks matching requests until the test releases them, so
// a test can stop a worker at a chosen point without sleeping.
//
// Quirks (SetQuirks) make the proxy act like an S3-compatible server that
// departs from S3 in a known way: one that ignores If-None-Match (Google
// Cloud Storage's S3 interface) or If-Match, refuses conditional writes
// (Backblaze B2's 501), lists open uploads only for a whole key (MinIO), or
// refuses flexible checksums. A quirk that drops a header signs the request
// again with the server's credentials, as SigV4 covers the header.
//
// The decisions come from one pseudo-random sequence seeded by New's seed:
// the n-th request that a rule matches gets the n-th draw. Which request is
// n-th depends on arrival order, so concurrent clients see the same number
// of faults among the same number of matched requests, not the same
// requests.
package faultproxy
