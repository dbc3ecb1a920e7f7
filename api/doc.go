// Package api is capsule's HTTP API and its page, served from the bucket
// with no other state.
//
// Reads are always on:
//
//	GET /v1/clusters                               clusters, their sources, backup counts, newest successful backup per source
//	GET /v1/clusters/{cluster}/backups             one cluster's backups, newest first, paginated (?source=&status=&limit=&cursor=); status failed|canceled|rejected|all adds the backups that ended without an index
//	GET /v1/clusters/{cluster}/backups/{backupId}  one backup's index and its newest verification
//	GET /v1/requests/{id}                          pending, running (with the lease's progress) or the result
//	GET /healthz                                   the process is up
//	GET /readyz                                    the bucket answers
//	GET /metrics                                   when Config.Metrics is set
//	GET /                                          the page (embedded; it reads the API above)
//	GET /v1/openapi.yaml, /schemas/{name}          the API's OpenAPI 3.1 document and the JSON Schemas it refers to
//
// Writes need Config.TokenFile and "Authorization: Bearer <token>"
// (compared in constant time; the file is re-read when it changes, so a
// rotated token takes effect on the next request):
//
//	POST /v1/requests              submit a request (validated like a request object; apiVersion and id may be left out)
//	POST /v1/requests/{id}/cancel  ask the worker running it to stop
//
// A cluster name may contain '/': clients escape it as %2F in the path
// (GET /v1/clusters/cnvrg%2Fcnvrg-app/backups).
//
// Freshness: backup listings (/v1/clusters and the backups endpoints) come
// from a per-cluster cache of the bucket's catalog that is refreshed at
// most every Config.CacheTTL (default 2s), so a backup committed to the
// bucket shows up within CacheTTL plus the time of one listing; each
// listing response says when it was read ("asOf"). Request status is read
// from the bucket on every call.
//
// Damaged indexes (see the index package: content that does not match
// the key, not parsable, or finished in the future by the bucket's clock)
// are not backups: listings skip them and name them under "damaged" with
// the key and the reason (the backups endpoint on its first page only),
// never failing the whole listing; asking for one by id gets 404 with the
// reason. Each is logged once per key (Config.Damaged).
//
// The backups the old cnvrg-capsule service left in the bucket (package
// legacy; Config.Legacy) belong to no cluster: GET /v1/clusters lists
// them under "legacy", each marked legacy: true with checksum and
// verification "none", and a Restore or Verify names one as
// legacy:<id>. When they cannot be listed (a key limited to capsule's
// prefix) the listing goes on without them and the reason is logged.
//
// Failed, canceled and rejected backups leave no index, only a result
// (results/<id>.json, one per request, not kept per cluster). The
// backups listing returns them under "failures" with
// ?status=failed|canceled|rejected, and beside the committed backups
// with ?status=all (one order, one set of pages); GET /v1/clusters gives
// each source its newest failure (lastFailure) and lists sources and
// clusters that only ever failed. They are searched among the newest
// Config.ResultWindow results (1,000) by the bucket's clock, each read
// once (results are written once), and results/ is listed again at most
// every Config.FailureTTL (15s). A failure's error is its first line,
// clipped; the page shows it as text.
//
// A verification's state (restored, checksum, failed) is in each
// listing's verification; records written before it existed get it
// derived (index.StateOf). The page's badges say which, never
// "restorable" for a checksum-only verification.
//
// Pagination is by position, not by page number: a cursor names the last
// backup returned (its finish time and id) and the next page starts
// strictly after it in the order (finishedAt desc, backupId desc), so
// backups committed while a client pages sort before the cursor and do not
// shift the pages after it.
//
// Errors are JSON, {"code": "...", "message": "...", "field": "..."}, with
// a stable code: bad paths, ids, parameters and bodies get 4xx; an
// unreachable bucket gets 503 bucket_unavailable; 500 internal is kept for
// genuine internal errors. The OpenAPI
// document openapi.yaml beside this file describes every response, and
// the tests validate every response they receive against it.
package api
