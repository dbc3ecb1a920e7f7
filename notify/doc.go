// Package notify turns S3 event notifications delivered through SQS into
// claim hints for the watcher.
//
// A bucket configured to send s3:ObjectCreated:* events for
// <prefix>requests/ to a queue lets a worker claim a new request within
// milliseconds instead of at its next LIST pass. The Listener long-polls
// the queue (20s, 10 messages at a time), parses each message with
// ParseMessage (the AWS format, MinIO's and versitygw's variants, SNS
// wrapping, S3's test event), maps the keys to request ids with IDs, and
// hands each id to a claim function ((*watcher.Watcher).ClaimHint, which
// respects the worker's concurrency limit). Every message is deleted after
// it was handled, including those that name nothing of ours, so the queue
// never fills with what no worker wants.
//
// Notifications are only hints (DESIGN.md, claim protocol step 7): a
// message may be late, duplicated, out of order, name a request that is
// already done, or never come. Claiming is idempotent, and the watcher's
// periodic LIST (slowed to a backstop interval while notifications are on)
// finds everything a message did not. A queue that fails makes the
// Listener back off and retry, never stop.
package notify
